"""The bug benchmark: does a race catch an unload bug that is really there?

Each case (cases.py) is a patch that puts an unload bug into a debug kernel
and the race target whose callers should reach it.  Every case of a release
is built into one derived kernel (`bugs-<release>`, this folder's
pyproject.toml), and the same options without the patches make the
unpatched kernel.  Each case's target is raced on both with the defaults a
user gets (`race --target T`: a quick and a held caller per op), through the
harness's own command line, run from this folder as any project would.

    .venv/bin/python bench/bugs/run.py [--only NAME,..] [--duration S] [--seed N] [--no-unpatched]

Writes build/bugs/bugs.{json,md} and each race's report beside them, and
prints per case: caught or missed (patched), clean or a false alarm
(unpatched), the splat, the time to it and the unloads before it; then the
recall (cases caught / cases), the false alarms, and the median time to
catch with its min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from cases import CASES, Case  # noqa: E402

OUT = REPO / "build" / "bugs"
# An exec caller (a shell with ip, ip6tables, ...) takes 0.5-1 s a call under
# a debug kernel in TCG, longer than the unloader leaves the module loaded by
# default (100 ms): every call would meet an unload and the race be
# `unreached`.  So a target whose callers exec is raced with the module left
# loaded this long between unloads: a pace of the op, the same for every case.
EXEC_UNLOAD_PAUSE_MS = 1500
CAUGHT = {"crashed", "warned"}  # a splat: the bug was seen
PY = REPO / ".venv" / "bin" / "python"


def patch_of(case: Case) -> Path:
    return HERE / "patches" / case.release / f"{case.name}.patch"


def check_cases() -> None:
    """Every case has its patch and every patch its case: a patch without a
    row would be built into the kernel and never raced."""
    names = {c.name for c in CASES}
    if len(names) != len(CASES):
        sys.exit("bench/bugs/cases.py: two cases share a name")
    for case in CASES:
        if not patch_of(case).is_file():
            sys.exit(f"bench/bugs/cases.py: {case.name}: no {patch_of(case).relative_to(REPO)}")
    for patch in (HERE / "patches").glob("*/*.patch"):
        if patch.stem not in names:
            sys.exit(f"{patch.relative_to(REPO)}: no case in bench/bugs/cases.py")


def harness(*args: str, log: Path) -> tuple[int, float]:
    """`python -m harness ARGS` from this folder; (exit status, seconds)."""
    t0 = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(
            [str(PY), "-m", "harness", *args],
            cwd=HERE,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        ).returncode
    return rc, time.monotonic() - t0


def build(kernel: str) -> float:
    rc, s = harness("fetch", "--kernel", kernel, log=OUT / f"build-{kernel}.log")
    if rc != 0:
        sys.exit(f"building {kernel} failed (exit {rc}); log: {OUT / f'build-{kernel}.log'}")
    return s


def pace(case: Case) -> tuple[str, ...]:
    """The race options the target's ops ask for (EXEC_UNLOAD_PAUSE_MS)."""
    sys.path.insert(0, str(REPO))
    from harness.race import targets

    row = targets.ROWS.get(case.target) or targets.project_targets(HERE).get(case.target)
    if row is not None and any(op.startswith("exec:") for op in row.ops):
        return ("--unload-pause", str(EXEC_UNLOAD_PAUSE_MS))
    return ()


def race(case: Case, kernel: str, duration: float, seed: int) -> dict:
    """One race of the case's target on `kernel`: its run's facts."""
    stem = f"{case.name}--{kernel}"
    report = OUT / f"{stem}.json"
    report.unlink(missing_ok=True)
    (OUT / stem).mkdir(parents=True, exist_ok=True)
    rc, seconds = harness(
        "race",
        "--kernel",
        kernel,
        "--target",
        case.target,
        "--duration",
        f"{duration:g}",
        "--seed",
        str(seed),
        "--json",
        str(report),
        "--html",
        str(OUT / stem / "index.html"),
        *pace(case),
        *case.args,
        log=OUT / f"{stem}.log",
    )
    if not report.is_file():
        return {"verdict": "error", "detail": f"no report (exit {rc}); log: {OUT / f'{stem}.log'}", "seconds": seconds}
    doc = json.loads(report.read_text())
    run = (doc[0] if isinstance(doc, list) else doc)["runs"][0]  # one kernel: one report
    splat = run["splats"][0] if run["splats"] else None
    return {
        "verdict": run["verdict"],
        "splat": f"{splat['kind']}: {splat['title']}" if splat else None,
        "first_splat_ms": run.get("first_splat_ms"),
        "unloads_before_splat": run.get("unloads_before_splat"),
        "unloads": run["ops"].get("delete_module", {}).get("ok", 0),
        "reach": [[r["role"], r["ok_live"], r["calls"]] for r in run.get("reach", [])],
        "seconds": round(seconds, 1),
        "report": str(report.relative_to(REPO)),
        "page": f"{stem}/index.html",
    }


def catch_s(patched: dict) -> float | None:
    """The time to the first splat, in s.  It is read from the console's
    clock and the callers' start from theirs; the two differ by some ms, so
    a splat of the very first unload can come out a little below 0: that is
    0 (rmd160 once came out at -11 ms)."""
    ms = patched.get("first_splat_ms")
    return None if ms is None else max(0.0, ms / 1000)


def summary(rows: list[dict]) -> list[str]:
    """Recall (caught / cases), precision (unpatched runs clean / cases) and
    the time to catch, as the issue defines them."""
    caught = [r for r in rows if r["patched"]["verdict"] in CAUGHT]
    raced = [r for r in rows if "unpatched" in r]
    clean = [r for r in raced if r["unpatched"]["verdict"] == "clean"]
    alarms = [r for r in raced if r["unpatched"]["verdict"] in CAUGHT]
    times = [t for t in (catch_s(r["patched"]) for r in caught) if t is not None]
    out = [f"recall: {len(caught)}/{len(rows)} cases caught ({100 * len(caught) / max(1, len(rows)):.0f} %)"]
    for kind in ("upstream", "broken"):
        mine = [r for r in rows if r["kind"] == kind]
        out.append(f"  {kind}: {sum(r in caught for r in mine)}/{len(mine)}")
    if raced:
        out.append(
            f"precision: {len(clean)}/{len(raced)} unpatched runs clean ({100 * len(clean) / len(raced):.0f} %); "
            f"false alarms (a splat unpatched): {len(alarms)}; "
            + ", ".join(f"{r['case']} {r['unpatched']['verdict']}" for r in raced if r not in clean and r not in alarms)
        )
    if times:
        out.append(
            f"time to catch: median {statistics.median(times):.1f} s, min {min(times):.1f} s, "
            f"max {max(times):.1f} s (n={len(times)})"
        )
    return out


def html(rows: list[dict], lines: list[str]) -> str:
    """An index of the cases, each linking its two races' pages (their timelines)."""
    from html import escape

    def link(r: dict) -> str:
        page = r.get("page")
        return f'<a href="{escape(page)}">{escape(r["verdict"])}</a>' if page else escape(r["verdict"])

    body = "".join(
        f"<tr><td>{escape(r['case'])}</td><td>{escape(r['kind'])}</td><td>{escape(r['target'])}</td>"
        f"<td>{link(r['patched'])}</td><td>{escape(r['patched'].get('splat') or '-')}</td>"
        f"<td>{link(r['unpatched']) if 'unpatched' in r else '-'}</td><td>{escape(r['cite'] or r['what'])}</td></tr>"
        for r in rows
    )
    return (
        "<!doctype html><meta charset=utf-8><title>Bug benchmark</title><h1>Bug benchmark</h1>"
        "<table border=1 cellpadding=4><tr><th>case<th>kind<th>target<th>patched<th>splat<th>unpatched<th>bug</tr>"
        f"{body}</table><pre>{escape(chr(10).join(lines))}</pre>\n"
    )


def markdown(rows: list[dict], builds: dict[str, float], lines: list[str]) -> str:
    md = [
        "# Bug benchmark",
        "",
        "| case | kind | target | patched | splat | to catch | unloads before | unpatched |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p, u = r["patched"], r.get("unpatched", {})
        t = f"{catch_s(p):.1f} s" if catch_s(p) is not None else "-"
        md.append(
            f"| {r['case']} | {r['kind']} | {r['target']} | {p['verdict']} | {p.get('splat') or '-'} | {t} "
            f"| {p.get('unloads_before_splat') if p.get('unloads_before_splat') is not None else '-'} "
            f"| {u.get('verdict', '-')} |"
        )
    md += ["", *lines, "", "Kernel builds: " + ", ".join(f"{k} {s:.0f} s" for k, s in builds.items())]
    return "\n".join(md) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma list of case names")
    ap.add_argument("--duration", type=float, default=10.0, help="race seconds per case (default 10)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-unpatched", action="store_true", help="skip the races on the unpatched kernels")
    ap.add_argument("--summarize", action="store_true", help="only render build/bugs/bugs.json again")
    args = ap.parse_args()
    if args.summarize:
        doc = json.loads((OUT / "bugs.json").read_text())
        write(doc["cases"], doc["builds_s"])
        return 0
    check_cases()
    only = {n for n in args.only.split(",") if n}
    unknown = only - {c.name for c in CASES}
    if unknown:
        sys.exit(f"--only: no case {', '.join(sorted(unknown))}; cases: {', '.join(c.name for c in CASES)}")
    cases = [c for c in CASES if not only or c.name in only]
    OUT.mkdir(parents=True, exist_ok=True)
    builds: dict[str, float] = {}
    for release in sorted({c.release for c in cases}):
        for kernel in (f"bugs-{release}",) + (() if args.no_unpatched else (f"bugs-{release}-unpatched",)):
            print(f"building {kernel} ...", flush=True)
            builds[kernel] = build(kernel)
            print(f"  {kernel}: {builds[kernel]:.0f} s", flush=True)
    rows: list[dict] = []
    for case in cases:
        row = {"case": case.name, "kind": case.kind, "target": case.target, "what": case.what, "cite": case.cite}
        row["patched"] = race(case, f"bugs-{case.release}", args.duration, args.seed)
        if not args.no_unpatched:
            row["unpatched"] = race(case, f"bugs-{case.release}-unpatched", args.duration, args.seed)
        p, u = row["patched"], row.get("unpatched", {})
        print(
            f"{case.name:<34} patched {p['verdict']:<10} {p.get('splat') or '':<60.60} "
            f"unpatched {u.get('verdict', '-')}",
            flush=True,
        )
        rows.append(row)
    write(rows, builds)
    return 0


def write(rows: list[dict], builds: dict[str, float]) -> None:
    lines = summary(rows)
    print("\n".join(lines))
    (OUT / "bugs.json").write_text(json.dumps({"builds_s": builds, "cases": rows, "summary": lines}, indent=1) + "\n")
    (OUT / "bugs.md").write_text(markdown(rows, builds, lines))
    (OUT / "index.html").write_text(html(rows, lines))
    print(f"written: {OUT / 'bugs.md'}, {OUT / 'bugs.json'}, {OUT / 'index.html'}")


if __name__ == "__main__":
    sys.exit(main())
