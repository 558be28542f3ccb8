"""KCIDB submissions (KernelCI's results database) from race reports and pytest sessions.

One checkout and one build per kernel (the Debian package version, or a local
tree's describe; its config's name and flags under the build's `misc`), one
test per race run, target race or pytest test, its status from the one table
in harness/reports/status.py, its measured figures under `misc` and its
console logs as `output_files` (`file://` URLs, or under `--kcidb-log-url`).
The schema version comes from the `kcidb-io` package, imported only here
(`pip install '.[ci]'`): the core harness does not need it.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import HarnessError
from ..race.outcomes import RaceReport, RunResult, op_json, problem
from ..util import safe_name, write_text
from .matrix import split_nodeid
from .status import outcome, run_status, test_status

DEFAULT_ORIGIN = "harness"
_ORIGIN = re.compile(r"^[a-z0-9_]+$")


def check_origin(origin: str) -> str:
    """KCIDB's origin: lower-case letters, digits and underscores."""
    if not _ORIGIN.match(origin):
        raise HarnessError(f"--kcidb-origin {origin!r}: KCIDB wants lower-case letters, digits and _ only")
    return origin


def _schema() -> Any:
    try:
        import kcidb_io
    except ImportError:
        raise HarnessError("--kcidb needs the kcidb-io package: pip install '.[ci]'") from None
    return kcidb_io.schema.LATEST


def require_kcidb() -> None:
    """Fail before anything boots when kcidb-io is missing."""
    _schema()


def validate(doc: Mapping[str, Any]) -> None:
    """kcidb-io's own validator (a jsonschema error when the document is not a submission)."""
    _schema().validate(doc)


def _part(text: str) -> str:
    """One part of a dotted KCIDB path or id: [A-Za-z0-9_-], never empty."""
    return safe_name(text, keep="_-")


@dataclass(frozen=True)
class KernelBuild:
    """What a submission says about one kernel."""

    spec: str  # the catalogue spec, or a local tree's path
    release: str  # uname -r
    describe: str = ""  # "Debian 6.1.192-3", "build tree, git v6.12.1"
    config: Mapping[str, Any] = field(default_factory=dict)  # lockdep, kasan, ...


@dataclass(frozen=True)
class Test:
    kernel: str  # KernelBuild.spec
    path: str  # dotted
    status: str
    comment: str = ""
    duration: float = 0.0
    misc: Mapping[str, Any] = field(default_factory=dict)
    logs: tuple[str, ...] = ()


def _url(path: str, prefix: str | None) -> str:
    if prefix:
        return prefix.rstrip("/") + "/" + Path(path).name
    return Path(path).resolve().as_uri()


def submission(
    builds: Sequence[KernelBuild],
    tests: Iterable[Test],
    origin: str = DEFAULT_ORIGIN,
    log_url: str | None = None,
    stamp: str | None = None,
) -> dict[str, Any]:
    """The KCIDB document.  `stamp` makes the ids unique per submission
    (default: the time and this process)."""
    schema = _schema()
    check_origin(origin)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}"
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    ids = {b.spec: _part(b.spec) + "-" + _part(b.release) for b in builds}
    checkouts = [
        {
            "id": f"{origin}:{stamp}-{ids[b.spec]}",
            "origin": origin,
            "start_time": now,
            "valid": True,
            "comment": b.describe or b.release,
            "misc": {"kernel_spec": b.spec, "release": b.release, "describe": b.describe},
        }
        for b in builds
    ]
    kbuilds = [
        {
            "id": f"{origin}:{stamp}-{ids[b.spec]}",
            "origin": origin,
            "checkout_id": f"{origin}:{stamp}-{ids[b.spec]}",
            "start_time": now,
            "architecture": "x86_64",
            "config_name": f"config-{b.release}",
            "status": "PASS",
            "comment": b.describe or b.release,
            "misc": {"kernel_spec": b.spec, "release": b.release, **dict(b.config)},
        }
        for b in builds
    ]
    out_tests = []
    for n, t in enumerate(tests, 1):
        doc: dict[str, Any] = {
            "id": f"{origin}:{stamp}-{n}-{t.path}",
            "origin": origin,
            "build_id": f"{origin}:{stamp}-{ids[t.kernel]}",
            "path": t.path,
            "status": t.status,
            "start_time": now,
            "duration": float(t.duration),
            "misc": dict(t.misc),
        }
        if t.comment:
            doc["comment"] = t.comment[:4000]
        files = [{"name": Path(p).name, "url": _url(p, log_url)} for p in t.logs if p]
        if files:
            doc["output_files"] = files
            doc["log_url"] = files[0]["url"]
        out_tests.append(doc)
    return {
        "version": {"major": schema.major, "minor": schema.minor},
        "checkouts": checkouts,
        "builds": kbuilds,
        "tests": out_tests,
    }


# ---------------------------------------------------------------- race reports


def race_build(report: RaceReport) -> KernelBuild:
    return KernelBuild(
        spec=report.kernel_spec,
        release=report.kernel,
        describe=report.kernel_describe,
        config={"lockdep": report.lockdep, "kasan": report.kasan},
    )


def run_path(run: RunResult) -> str:
    """`harness.race.refcount.lookup`, `harness.target.vfat.mount`."""
    kind = "target" if run.target is not None else "race"
    return ".".join(["harness", kind, _part(run.scheme), _part(run.workload)])


def run_misc(report: RaceReport, run: RunResult) -> dict[str, Any]:
    """A run's figures (the table's columns, the JSON report's counts) without histograms."""
    calls = run.callers
    ops = {}
    for name, st in run.ops.items():
        doc = op_json(st)
        doc.pop("hist", None)
        doc.pop("hist_failed", None)
        ops[name] = doc
    key = outcome(run)
    return {
        "verdict": run.verdict.value,
        "control": run.control.value,
        "outcome": key if isinstance(key, str) else key.value,
        "problem": problem(run) or "",
        "calls": {"ok": calls.ok, "total": calls.total, "errors": calls.errors},
        "unloads": run.unloads,
        "spurious_failures": run.spurious_failures,
        "failed_by_unloads_met": list(run.failed_by_unloads_met),
        "ops": ops,
        "splats": [f"{s.kind.value}: {s.title}" for s in run.splats],
        # The first splat's frames with file:line, where the kernel's debug info could say.
        **({"decoded_trace": list(run.splats[0].decoded)} if run.splats and run.splats[0].decoded else {}),
        "role_errors": run.role_errors,
        "seconds": run.seconds,
        "seed": report.seed,
        "duration_s": report.duration_s,
        "accel": report.accel,
        "knobs": dict(report.knobs),
        "repro": run.repro,
        **({"target": run.target.to_json()} if run.target else {}),
    }


def race_tests(report: RaceReport) -> list[Test]:
    return [
        Test(
            kernel=report.kernel_spec,
            path=run_path(r),
            status=run_status(r),
            comment=problem(r) or f"{r.scheme}/{r.workload}: {r.verdict.value}",
            duration=r.seconds,
            misc=run_misc(report, r),
            logs=(r.console_log,) if r.console_log else (),
        )
        for r in report.runs
    ]


def race_submission(
    reports: Sequence[RaceReport], origin: str = DEFAULT_ORIGIN, log_url: str | None = None
) -> dict[str, Any]:
    builds: dict[str, KernelBuild] = {}
    for r in reports:  # one report per kernel; the first wins should two share a spec
        builds.setdefault(r.kernel_spec, race_build(r))
    return submission(list(builds.values()), [t for r in reports for t in race_tests(r)], origin, log_url)


# ---------------------------------------------------------------- pytest sessions


def _props(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {str(p[0]): p[1] for p in rec.get("user_properties") or ()}


def pytest_path(nodeid: str, known_kernels: Iterable[str] = ()) -> str:
    """`tests/claims/test_claim1_x.py::test_claim1_x[6.1]` -> `harness.claims.claim1_x`
    (the kernel is the build's; other parameters are a last part)."""
    func, _, rest = split_nodeid(nodeid, known_kernels)
    folder = Path(nodeid.split("::")[0]).parent.name or "tests"
    name = func[5:] if func.startswith("test_") else func
    return ".".join(["harness", _part(folder), _part(name), *([_part(rest)] if rest else [])])


def pytest_submission(
    records: Iterable[Mapping[str, Any]],
    known_kernels: Iterable[str] = (),
    origin: str = DEFAULT_ORIGIN,
    log_url: str | None = None,
) -> dict[str, Any]:
    """One test per test id from the report phases the plugin collects
    (`{"nodeid", "when", "outcome", "duration", "user_properties", "longrepr"}`,
    the claims matrix's records): setup failed -> error, else the call's outcome."""
    known = tuple(known_kernels)
    tests: dict[str, dict[str, Any]] = {}
    for rec in records:
        t = tests.setdefault(rec["nodeid"], {"outcome": "", "duration": 0.0, "props": {}, "message": ""})
        t["props"].update(_props(rec))
        when, out = rec.get("when"), rec.get("outcome")
        if when == "call":
            t["outcome"], t["duration"] = out or "", float(rec.get("duration") or 0.0)
            t["message"] = rec.get("longrepr") or t["message"]
        elif out == "failed":
            t["outcome"], t["message"] = "error", rec.get("longrepr") or ""
        elif out == "skipped" and not t["outcome"]:
            t["outcome"], t["message"] = "skipped", rec.get("longrepr") or ""
    builds: dict[str, KernelBuild] = {}
    out_tests: list[Test] = []
    for nodeid, t in tests.items():
        props = t["props"]
        kernel = str(props.get("kernel") or split_nodeid(nodeid, known)[1] or "unknown")
        if kernel not in builds or not builds[kernel].release:
            builds[kernel] = KernelBuild(
                spec=kernel,
                release=str(props.get("kernel_release") or ""),
                describe=str(props.get("kernel_describe") or ""),
                config=dict(props.get("kernel_config") or {}),
            )
        misc = {k: v for k, v in props.items() if k not in ("console_logs", "kernel_config")}
        misc["nodeid"], misc["outcome"] = nodeid, t["outcome"]
        out_tests.append(
            Test(
                kernel=kernel,
                path=pytest_path(nodeid, known),
                status=test_status(t["outcome"]),
                comment=str(t["message"])[-2000:],
                duration=round(t["duration"], 2),
                misc=misc,
                logs=tuple(str(p) for p in props.get("console_logs") or ()),
            )
        )
    return submission(list(builds.values()), out_tests, origin, log_url)


def write(doc: Mapping[str, Any], path: Path) -> None:
    """Validated, then written."""
    validate(doc)
    write_text(path, json.dumps(doc, indent=1, default=str) + "\n")
