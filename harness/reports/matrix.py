"""Claim x kernel matrix from pytest test reports: pure code, no pytest import.

Input: one record per test report phase, as the claims' conftest collects
them in `pytest_runtest_logreport` (also in the xdist controller):
`{"nodeid", "when", "outcome", "duration", "user_properties": [[k, v], ...],
"longrepr"}`.  A test's row is its name plus its non-kernel parameters
(`test_claim4_x[rwsem]`); its column is the kernel, from the `kernel` user
property or else from the test id's parameters.  A cell holds the outcome
(passed, failed, error = setup/teardown failed, skipped), the seconds of the
call, the `measured` property (a JSON-serialisable dict) and the
`console_logs` property (the guests' console logs, which the pytest plugin
records).  `reports.matrix_page.write_matrix` writes matrix.json, matrix.md
and index.html (the coloured grid); `python -m harness matrix-page DIR` writes
the page again from DIR/matrix.json.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Iterable

OUTCOME_MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}


@dataclass
class Cell:
    outcome: str = ""  # passed | failed | error | skipped
    seconds: float = 0.0
    measured: dict | None = None
    message: str = ""  # the end of the failure report
    claim_holds: bool | None = None  # from the test; None: the outcome says it
    fact: bool = False  # a measured fact of the kernel (loader behaviour), no claim to hold
    console_logs: list[str] = field(default_factory=list)  # the test's guests' console logs
    guest_starts: list[str] = field(default_factory=list)  # per guest: "restored" or "cold"

    def holds(self) -> bool | None:
        """Does the seed's claim hold here?  A test that asserts a measured
        contradiction records claim_holds=False and passes; any other passing
        test holds its claim; a failed one says nothing certain."""
        if self.outcome != "passed" or self.fact:
            return None
        return True if self.claim_holds is None else self.claim_holds


@dataclass
class Matrix:
    kernels: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)  # claim -> kernel -> cell
    # kernel -> {"release": uname -r, "version": Debian's package version}, from
    # the tests' kernel_release / kernel_version properties (older JSON: none)
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def cell(self, claim: str, kernel: str) -> Cell | None:
        return self.cells.get(claim, {}).get(kernel)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.cells.values():
            for c in row.values():
                out[c.outcome] = out.get(c.outcome, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict:
        return {
            "kernels": self.kernels,
            "claims": self.claims,
            "totals": self.totals(),
            "versions": self.versions,
            "cells": {claim: {k: asdict(c) for k, c in row.items()} for claim, row in self.cells.items()},
        }

    @classmethod
    def from_json(cls, doc: dict) -> "Matrix":
        known = {f.name for f in fields(Cell)}
        return cls(
            kernels=list(doc["kernels"]),
            claims=list(doc["claims"]),
            cells={
                claim: {k: Cell(**{n: v for n, v in c.items() if n in known}) for k, c in row.items()}
                for claim, row in doc["cells"].items()
            },
            versions={k: dict(v) for k, v in (doc.get("versions") or {}).items()},
        )


def split_nodeid(nodeid: str, known_kernels: Iterable[str] = ()) -> tuple[str, str | None, str]:
    """`path::test_x[rwsem-6.1]` -> (`test_x`, kernel or None, `rwsem`): the
    kernel is the dash-separated part of the id that names a known kernel
    (longest match first, since `6.1-rt` contains `6.1`)."""
    name = nodeid.split("::")[-1]
    m = re.fullmatch(r"(.*?)\[(.*)\]", name)
    if not m:
        return name, None, ""
    func, params = m.group(1), m.group(2)
    for k in sorted(known_kernels, key=len, reverse=True):
        for pat in (rf"^{re.escape(k)}-", rf"-{re.escape(k)}$", rf"-{re.escape(k)}-", rf"^{re.escape(k)}$"):
            hit = re.search(pat, params)
            if hit:
                rest = (params[: hit.start()] + "-" + params[hit.end() :]).strip("-")
                rest = re.sub("--+", "-", rest)
                return func, k, rest
    return func, None, params


def claim_key(func: str, rest: str) -> str:
    return f"{func}[{rest}]" if rest else func


def _props(rec: dict) -> dict:
    out = {}
    for item in rec.get("user_properties") or []:
        k, v = item[0], item[1]
        out[k] = v
    return out


def build_matrix(records: Iterable[dict], known_kernels: Iterable[str] = ()) -> Matrix:
    """Fold report phases into one cell per test and kernel.

    setup failed -> error; call decides passed/failed/skipped; a failed
    teardown after a passed call -> error.  The last `measured` seen wins.
    """
    known = tuple(known_kernels)
    mx = Matrix()
    for rec in records:
        props = _props(rec)
        func, kernel_from_id, rest = split_nodeid(rec["nodeid"], known)
        kernel = str(props.get("kernel") or kernel_from_id or "?")
        claim = claim_key(func, rest)
        if claim not in mx.claims:
            mx.claims.append(claim)
        if kernel not in mx.kernels:
            mx.kernels.append(kernel)
        cell = mx.cells.setdefault(claim, {}).setdefault(kernel, Cell())
        for prop, key in (("kernel_release", "release"), ("kernel_version", "version")):
            if props.get(prop):
                mx.versions.setdefault(kernel, {})[key] = str(props[prop])
        when, outcome = rec.get("when"), rec.get("outcome")
        if "measured" in props:
            cell.measured = props["measured"]
        if "claim_holds" in props:
            cell.claim_holds = bool(props["claim_holds"])
        if props.get("kind") == "fact":
            cell.fact = True
        for log in props.get("console_logs") or ():
            if log not in cell.console_logs:
                cell.console_logs.append(str(log))
        if when == "call":
            cell.guest_starts = [str(st.get("path")) for st in props.get("guest_starts") or () if st]
        if when == "call":
            cell.seconds = round(float(rec.get("duration", 0.0)), 1)
            cell.outcome = outcome or ""
            if outcome == "failed":
                cell.message = rec.get("longrepr", "")
        elif outcome == "failed":  # setup or teardown
            cell.outcome = "error"
            cell.message = rec.get("longrepr", "")
        elif outcome == "skipped" and not cell.outcome:
            cell.outcome = "skipped"
    mx.kernels.sort(key=_kernel_order(known))
    mx.claims.sort()
    return mx


def _kernel_order(known: tuple[str, ...]):
    def key(k: str):
        return (known.index(k) if k in known else len(known), k)

    return key


VERBOSE_KEYS = ("detail", "runs")  # kept in the JSON, left out of the Markdown


def _short(measured: dict | None, limit: int = 300) -> str:
    """A compact one-line rendering of the measured dict (insertion order,
    without VERBOSE_KEYS) for the Markdown."""
    if not measured:
        return ""
    text = json.dumps({k: v for k, v in measured.items() if k not in VERBOSE_KEYS}, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cell_text(c: Cell) -> str:
    mark = OUTCOME_MARK.get(c.outcome, c.outcome or "?")
    holds = {True: "holds", False: "does not hold", None: ""}[c.holds()]
    return f"{mark}, {holds} ({c.seconds:g}s)" if holds else f"{mark} ({c.seconds:g}s)"


def render_markdown(mx: Matrix, detail_limit: int = 300) -> str:
    """Outcome table (claim x kernel), then per cell the measured values."""
    lines = ["# Claims x kernels", ""]
    totals = mx.totals()
    lines.append("Totals: " + (", ".join(f"{k} {v}" for k, v in totals.items()) or "no results"))
    starts = [p for row in mx.cells.values() for c in row.values() for p in c.guest_starts]
    if starts:
        lines.append("Guests: " + ", ".join(f"{starts.count(p)} {p}" for p in sorted(set(starts))))
    if mx.versions:
        lines.append(
            "Kernels: "
            + ", ".join(f"{k} {v.get('release', '?')} ({v.get('version', '?')})" for k, v in mx.versions.items())
        )
    lines.append("")
    lines.append("A cell is the test's outcome and what it says of the seed's claim: a test")
    lines.append("passes when the kernel behaves as measured; `does not hold` marks a claim")
    lines.append("that the measurement contradicts.")
    lines.append("")
    head = ["claim", *mx.kernels]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for claim in mx.claims:
        row = [f"`{claim}`"]
        for k in mx.kernels:
            c = mx.cell(claim, k)
            row.append(_cell_text(c) if c else "–")
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Measured", ""]
    for claim in mx.claims:
        lines.append(f"### `{claim}`")
        lines.append("")
        for k in mx.kernels:
            c = mx.cell(claim, k)
            if c is None:
                continue
            mark = OUTCOME_MARK.get(c.outcome, c.outcome or "?")
            detail = _short(c.measured, detail_limit).replace("|", "\\|")
            lines.append(f"- **{k}** {mark}: `{detail}`" if detail else f"- **{k}** {mark}")
            if c.message and c.outcome in ("failed", "error"):
                last = [ln for ln in c.message.strip().splitlines() if ln.strip()][-1:] or [""]
                lines.append(f"  - {last[0].strip()[:200]}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
