"""A simulated race for the HTML report's tests: racer output (format 2) of an
unloader and a looker whose calls either fail inside the unload windows
(refcount) or wait them out (rwsem), at times the test knows."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from harness.guest.splat import parse
from harness.race.kbuild import Knobs
from harness.race.outcomes import RaceReport, RunEnd, RunResult, summarise_run
from harness.race.racer import RoleResult, hist_of, latency_from_hist, parse_role_output

START_NS = 7_000_000_000
CALL_US = 1400  # a lookup outside the windows
EXIT_US = 200_000  # exit_delay_ms=200
RELOAD_US = 30_000
PAUSE_US = 100_000


@dataclass
class Sim:
    windows_us: list[tuple[int, int, int]]
    failures_us: list[tuple[int, int, str]]
    ok_latencies_ns: list[int]
    done: list[int]
    ok: list[int]
    duration_us: int


def simulate(fails: bool, duration_s: float = 6.0, seed: int = 1) -> Sim:
    """Calls back to back against unload cycles: a call that meets a window
    fails at once (`fails`) or waits until the reload returned."""
    rng = random.Random(seed)
    dur = int(duration_s * 1e6)
    windows = []
    t = 50_000
    while t < dur:
        deleted = t + EXIT_US + rng.randrange(0, 40_000)
        reloaded = deleted + RELOAD_US + rng.randrange(0, 10_000)
        windows.append((t, deleted, reloaded))
        t = reloaded + PAUSE_US + rng.randrange(0, 20_000)
    windows = [w for w in windows if w[2] < dur]
    failures, ok_lat, ends = [], [], []
    t, wi = 0, 0
    while t < dur:
        while wi < len(windows) and windows[wi][2] <= t:
            wi += 1
        inside = wi < len(windows) and windows[wi][0] <= t < windows[wi][2]
        if inside and fails:
            end = t + rng.randrange(40, 400)
            failures.append((t, end, "ENODEV" if rng.random() < 0.9 else "ENOENT"))
            t = end + rng.randrange(20_000, 60_000)  # a failed caller sleeps a little before its next try
        elif inside:
            end = windows[wi][2] + rng.randrange(200, 2000)
            ok_lat.append((end - t) * 1000)
        else:
            end = t + CALL_US + rng.randrange(0, 300)
            ok_lat.append((end - t) * 1000)
        ends.append((end, not (inside and fails)))
        t = end if not (inside and fails) else t
    bins = dur // 100_000 + 1
    done, ok = [0] * bins, [0] * bins
    for end, good in ends:
        if end < dur:
            done[end // 100_000] += 1
            ok[end // 100_000] += good
    return Sim(windows, failures, ok_lat, done, ok, dur)


def roles(sim: Sim, looker_late_us: int = 300) -> list[RoleResult]:
    fail_ns = [(e - s) * 1000 for s, e, _ in sim.failures_us]
    all_ns = sim.ok_latencies_ns + fail_ns
    hist = hist_of(all_ns)
    errors: dict[str, int] = {}
    for _, _, e in sim.failures_us:
        errors[e] = errors.get(e, 0) + 1
    looker = {
        "format": 2,
        "role": "looker",
        "name": "x_prov0",
        "duration_ms": sim.duration_us // 1000,
        "iterations": len(all_ns),
        "ops": {
            "lookup": {
                "total": len(all_ns),
                "ok": len(sim.ok_latencies_ns),
                "errors": errors,
                "failed_during_unload": len(fail_ns),
                "failed_by_unloads_met": [0, len(fail_ns), 0],
                "latency_us": latency_from_hist(hist, max(all_ns) / 1000),
                "hist": {"sub_bits": 7, "buckets": [list(b) for b in hist]},
                "hist_failed": {"sub_bits": 7, "buckets": [list(b) for b in hist_of(fail_ns)]},
            }
        },
        "events": {
            "start_ns": START_NS + looker_late_us * 1000,
            "calls": {
                "op": "lookup",
                "failures_total": len(fail_ns),
                "failures": [list(f) for f in sim.failures_us],
                "bin_ms": 100,
                "done": sim.done,
                "ok": sim.ok,
            },
        },
    }
    n = len(sim.windows_us)
    unloader = {
        "format": 2,
        "role": "unloader",
        "name": "x_prov0",
        "duration_ms": sim.duration_us // 1000,
        "iterations": n,
        "ops": {
            "delete_module": {"total": n + 50, "ok": n, "errors": {"EAGAIN": 50}},
            "load": {"total": n, "ok": n, "errors": {}},
        },
        "events": {
            "start_ns": START_NS,
            "unloads": {"total": n, "windows": [[b, d, r, None, None] for b, d, r in sim.windows_us]},
        },
    }
    return [parse_role_output(json.dumps(d)) for d in (unloader, looker)]


# As the parser finds it: these lines name no "Modules linked in", so no modules.
(OOPS,) = parse(
    "[   12.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    "[   12.000001] RIP: 0010:un_prov0_call+0x10/0x30 [un_prov0]\n"
    "[   12.000002] ---[ end trace 0000000000000000 ]---\n"
)


def run_of(scheme: str, sim: Sim, console_log: str = "") -> RunResult:
    run = summarise_run(
        scheme,
        "lookup",
        roles(sim),
        [],
        RunEnd.COMPLETED,
        "",
        f"python -m harness race --scheme {scheme} --workload lookup --seed 5",
        6.5,
    )
    run.console_log = console_log
    return run


def report(console_log: str = "", duration_s: float = 6.0) -> RaceReport:
    """refcount fails inside the windows, rwsem waits there, unsafe crashed."""
    rep = RaceReport(
        "6.1.0-57-amd64",
        "6.1",
        "tcg",
        5,
        duration_s,
        False,
        Knobs({"call_delay_us": 1000, "exit_delay_ms": 200}),
        "finit",
    )
    rep.runs.append(run_of("refcount", simulate(True, duration_s), console_log))
    rep.runs.append(run_of("rwsem", simulate(False, duration_s, seed=2), console_log))
    crashed = summarise_run(
        "unsafe",
        "lookup",
        [roles(simulate(False, 1.0, seed=3))[0], RoleResult.failed("looker", "no result (killed)")],
        [OOPS],
        RunEnd.COMPLETED,
        "",
        "python -m harness race --scheme unsafe",
        2.0,
    )
    crashed.console_log = console_log
    rep.runs.append(crashed)
    return rep
