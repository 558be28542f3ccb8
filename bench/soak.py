"""A soak (not a test): run one harness command for a long time and sample the
memory of the harness process and of the QEMU guests it starts.

    .venv/bin/python bench/soak.py --out build/soak/race [--interval 10]
        [--stop-after S] [--report FILE] -- python -m harness race ...

Writes samples.csv (one row per sample) and summary.json in --out, and prints
the summary: the harness's RSS after warm-up and at the end (the growth in %),
the guests' largest RSS, and the report's size and whether it still parses.
--stop-after sends SIGINT after S seconds, as a cancelled CI job would, and
the summary then records the exit status the command gave.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Sample:
    t: float
    harness_kib: int
    qemu_kib: int
    guests: int
    others_kib: int


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(comm, ppid, rss KiB) of a live process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may hold spaces; the fields after it are fixed.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return comm, int(rest[1]), int(rest[21]) * PAGE_KIB


def sample(root: int, t: float) -> Sample | None:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            procs[int(entry)] = st
    if root not in procs:
        return None
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    qemu = guests = others = 0
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        comm, _, rss = procs[pid]
        if comm.startswith("qemu-system"):
            qemu, guests = qemu + rss, guests + 1
        else:
            others += rss
        stack.extend(children.get(pid, []))
    return Sample(round(t, 1), procs[root][2], qemu, guests, others)


def summarise(samples: list[Sample], warmup: float) -> dict:
    settled = [s for s in samples if s.t >= warmup] or samples
    tenth = max(1, len(settled) // 10)
    first = statistics.median(s.harness_kib for s in settled[:tenth])
    last = statistics.median(s.harness_kib for s in settled[-tenth:])
    qemu = [s.qemu_kib for s in samples if s.guests]
    return {
        "samples": len(samples),
        "seconds": samples[-1].t if samples else 0,
        "harness_rss_mib_after_warmup": round(first / 1024, 1),
        "harness_rss_mib_at_end": round(last / 1024, 1),
        "harness_rss_growth_pct": round(100 * (last - first) / first, 1) if first else None,
        "harness_rss_mib_max": round(max(s.harness_kib for s in samples) / 1024, 1),
        "qemu_rss_mib_median": round(statistics.median(qemu) / 1024, 1) if qemu else None,
        "qemu_rss_mib_max": round(max(qemu) / 1024, 1) if qemu else None,
        "guests_at_once_max": max(s.guests for s in samples),
    }


def report_facts(path: Path | None) -> dict:
    if path is None:
        return {}
    if not path.is_file():
        return {"report": str(path), "report_present": False}
    try:
        json.loads(path.read_text())
        parses = True
    except ValueError:
        parses = False
    return {"report": str(path), "report_bytes": path.stat().st_size, "report_parses": parses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=300.0, help="seconds before the RSS baseline")
    ap.add_argument("--stop-after", type=float, help="send SIGINT after this many seconds")
    ap.add_argument("--report", type=Path, help="a JSON report the command writes")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command after --")
    args.out.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    t0 = time.monotonic()
    # A default SIGINT for the command: started from a background job it would
    # inherit an ignored one, and --stop-after's SIGINT would go unseen.
    proc = subprocess.Popen(command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stopped_at = None
    with open(args.out / "samples.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(Sample.__dataclass_fields__)
        while proc.poll() is None:
            now = time.monotonic() - t0
            if args.stop_after is not None and stopped_at is None and now >= args.stop_after:
                proc.send_signal(signal.SIGINT)
                stopped_at = round(now, 1)
            if (s := sample(proc.pid, now)) is not None:
                samples.append(s)
                writer.writerow(asdict(s).values())
                f.flush()
            try:
                proc.wait(timeout=args.interval)
            except subprocess.TimeoutExpired:
                pass
    summary = {
        "command": command,
        "exit_status": proc.returncode,
        "wall_seconds": round(time.monotonic() - t0, 1),
        "sigint_at": stopped_at,
        **summarise(samples, args.warmup),
        **report_facts(args.report),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
