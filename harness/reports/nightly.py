"""The nightly page: every kernel job's matrix.json merged into one matrix, and
what changed since the previous night listed at its top.

`python -m harness nightly merge DIR_OR_JSON... --out DIR [--previous
DIR_OR_JSON] [--summary FILE]` (harness/cli/reports.py) writes DIR/matrix.json,
matrix.md and index.html (reports.matrix_page) with the changes above the grid,
and the changes as Markdown to FILE (the workflow appends it to $GITHUB_STEP_SUMMARY).
Exit 0; 1 when a claim flipped (held one night, does not hold the next, or the
reverse); 2 on unreadable input.

What counts as a change, per (test, kernel) present on both nights:
- claim flipped: `Cell.holds()` went True <-> False;
- verdict: the outcome changed (passed, failed, error, skipped);
- loader fact: a fact cell's findings changed, i.e. the top-level booleans and
  strings of its `measured` (numbers are timings and counts that vary night to
  night; the verbose records are left out);
- a test or a kernel that appeared or disappeared;
and per kernel, its exact release (uname -r) or Debian version changed.

The guests' console logs the cells name are absolute paths on the machine that
ran the kernel's job.  The merge finds each in the job's uploaded folder (the
`logs/` beside its `matrix/`, as the workflow uploads build/matrix and
build/logs together) or where it was written, and copies it to
OUT/logs/KERNEL/, so the page's links work in the one folder it is published in.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..util import write_text
from .matrix import VERBOSE_KEYS, Cell, Matrix
from .matrix_page import write_matrix
from .page import esc

KINDS = ("claim", "verdict", "fact", "kernel", "test")
KIND_TITLE = {
    "claim": "Claim flipped",
    "verdict": "Verdict changed",
    "fact": "Loader fact changed",
    "kernel": "Kernel changed",
    "test": "Test added or gone",
}


@dataclass(frozen=True)
class Change:
    kind: str  # one of KINDS
    kernel: str
    test: str  # "" for a kernel change
    before: str
    after: str


@dataclass
class Changes:
    items: list[Change] = field(default_factory=list)
    compared: bool = False  # False: no previous night to compare with

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.items if c.kind == kind]

    @property
    def flipped(self) -> bool:
        return bool(self.of("claim"))


def load(path: Path) -> Matrix:
    """A matrix.json, or a folder holding one."""
    src = path / "matrix.json" if path.is_dir() else path
    return Matrix.from_json(json.loads(src.read_text()))


def log_candidates(log: str, source: Path) -> list[Path]:
    """Where a cell's console log may be, for a matrix read from `source` (a
    matrix.json or its folder): beside the matrix in the job's uploaded folder,
    then the path it was written at."""
    folder = source.parent if source.suffix == ".json" else source
    name = Path(log).name
    return [folder / "logs" / name, folder.parent / "logs" / name, Path(log)]


def gather_logs(mx: Matrix, source: Path, out: Path) -> int:
    """Copy the console logs `mx`'s cells name into OUT/logs/KERNEL/ and point the
    cells there; a log found nowhere keeps its name (the page says "not kept").
    Returns how many were copied."""
    copied = 0
    for row in mx.cells.values():
        for kernel, cell in row.items():
            kept = []
            for log in cell.console_logs:
                found = next((p for p in log_candidates(log, source) if p.is_file()), None)
                if found is None:
                    kept.append(log)
                    continue
                dest = out / "logs" / kernel / found.name
                if found.resolve() != dest.resolve():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(found, dest)
                    copied += 1
                kept.append(str(dest))
            cell.console_logs = kept
    return copied


def merge(matrices: Sequence[Matrix], order: Sequence[str] = ()) -> Matrix:
    """One matrix of all kernels; a later matrix's cell wins over an earlier's.
    Kernels in `order` (the catalogue's) first, the rest by name."""
    out = Matrix()
    for mx in matrices:
        for k in mx.kernels:
            if k not in out.kernels:
                out.kernels.append(k)
        for claim in mx.claims:
            if claim not in out.claims:
                out.claims.append(claim)
        for claim, row in mx.cells.items():
            out.cells.setdefault(claim, {}).update(row)
        for k, v in mx.versions.items():
            out.versions[k] = dict(v)
    out.kernels.sort(key=lambda k: (order.index(k) if k in order else len(order), k))
    out.claims.sort()
    out.versions = {k: out.versions[k] for k in out.kernels if k in out.versions}
    return out


def _holds_text(c: Cell) -> str:
    return {True: "holds", False: "does not hold", None: "-"}[c.holds()]


def findings(c: Cell) -> dict[str, object]:
    """A fact cell's findings: the top-level booleans and strings it measured."""
    return {k: v for k, v in (c.measured or {}).items() if k not in VERBOSE_KEYS and isinstance(v, (bool, str))}


def compare(before: Matrix, after: Matrix) -> Changes:
    out = Changes(compared=True)
    add = out.items.append
    for k in after.kernels:
        old, new = before.versions.get(k), after.versions.get(k)
        if k not in before.kernels:
            add(Change("kernel", k, "", "absent", _version_text(new)))
        elif old and new and old != new:
            add(Change("kernel", k, "", _version_text(old), _version_text(new)))
    for k in before.kernels:
        if k not in after.kernels:
            add(Change("kernel", k, "", _version_text(before.versions.get(k)), "absent"))
    for claim in sorted(set(before.claims) | set(after.claims)):
        for k in after.kernels:
            if k not in before.kernels:
                continue
            b, a = before.cell(claim, k), after.cell(claim, k)
            if b is None and a is None:
                continue
            if b is None or a is None:
                add(
                    Change("test", k, claim, "absent" if b is None else b.outcome, "absent" if a is None else a.outcome)
                )
                continue
            hb, ha = b.holds(), a.holds()
            if hb is not None and ha is not None and hb != ha:
                add(Change("claim", k, claim, _holds_text(b), _holds_text(a)))
            if b.outcome != a.outcome:
                add(Change("verdict", k, claim, b.outcome or "?", a.outcome or "?"))
            if (a.fact or b.fact) and findings(b) != findings(a):
                fb, fa = findings(b), findings(a)
                keys = sorted(set(fb) | set(fa), key=str)
                add(
                    Change(
                        "fact",
                        k,
                        claim,
                        json.dumps({x: fb.get(x) for x in keys if fb.get(x) != fa.get(x)}),
                        json.dumps({x: fa.get(x) for x in keys if fb.get(x) != fa.get(x)}),
                    )
                )
    return out


def _version_text(v: dict[str, str] | None) -> str:
    if not v:
        return "unknown"
    return f"{v.get('release', '?')} ({v.get('version', '?')})"


def summary_markdown(changes: Changes, mx: Matrix) -> str:
    """What changed since the previous night, as Markdown (the job summary and
    the top of matrix.md)."""
    lines = ["## Since the previous night", ""]
    if not changes.compared:
        lines.append("No previous night to compare with.")
    elif not changes.items:
        lines.append("No change: every claim, loader fact, verdict and kernel version as the night before.")
    else:
        if changes.flipped:
            lines.append(f"**{len(changes.of('claim'))} claim(s) flipped: this job fails.**")
            lines.append("")
        lines += ["| change | kernel | test | before | after |", "|---|---|---|---|---|"]
        for kind in KINDS:
            for c in changes.of(kind):
                cells = [KIND_TITLE[kind], c.kernel, f"`{c.test}`" if c.test else "", c.before, c.after]
                lines.append("| " + " | ".join(x.replace("|", "\\|") for x in cells) + " |")
    totals = ", ".join(f"{k} {v}" for k, v in mx.totals().items()) or "no results"
    lines += ["", f"{len(mx.claims)} tests on {len(mx.kernels)} kernel(s): {totals}."]
    return "\n".join(lines) + "\n"


def summary_html(changes: Changes) -> list[str]:
    out = ["<h2>Since the previous night</h2>"]
    if not changes.compared:
        return out + ['<p class="meta">No previous night to compare with.</p>']
    if not changes.items:
        return out + [
            '<p class="meta">No change: every claim, loader fact, verdict and kernel version as the night before.</p>'
        ]
    if changes.flipped:
        out.append(f'<p><span class="badge m-not">{len(changes.of("claim"))} claim(s) flipped</span></p>')
    out.append(
        '<table class="changes"><tr><th>change</th><th>kernel</th><th>test</th><th>before</th><th>after</th></tr>'
    )
    for kind in KINDS:
        for c in changes.of(kind):
            out.append(
                f'<tr class="change-{kind}"><td>{esc(KIND_TITLE[kind])}</td><td>{esc(c.kernel)}</td>'
                f"<td><code>{esc(c.test)}</code></td><td>{esc(c.before)}</td><td>{esc(c.after)}</td></tr>"
            )
    out.append("</table>")
    return out


def run_merge(
    inputs: Sequence[Path],
    out: Path,
    previous: Path | None = None,
    summary: Path | None = None,
    order: Sequence[str] = (),
) -> tuple[Matrix, Changes]:
    jobs = [load(p) for p in inputs]
    for job, src in zip(jobs, inputs):
        gather_logs(job, src, out)
    mx = merge(jobs, order)
    changes = compare(load(previous), mx) if previous is not None else Changes()
    md = summary_markdown(changes, mx)
    write_matrix(mx, out, md_head=md, html_head=summary_html(changes))
    if summary is not None:
        summary.parent.mkdir(parents=True, exist_ok=True)
        write_text(summary, md)
    return mx, changes
