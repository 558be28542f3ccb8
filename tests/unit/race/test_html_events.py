"""The racer's timeline events (output format 2): what the binary records on
the host, how the host parses them, and a synthetic race whose unload windows
and failed calls sit at known times, put on one axis by `report.timeline`."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.guest.programs import build_racer
from harness.race.outcomes import RunEnd, summarise_run, timeline
from harness.race.racer import CallFailure, RoleResult, UnloadWindow, hist_of, parse_role_output

MAX_FAILURES = 20000  # racer.c


@pytest.fixture(scope="module")
def racer():
    return str(build_racer())


def _run(racer, *args):
    proc = subprocess.run([racer, *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_failed_calls_are_kept_up_to_the_bound_and_counted_exactly(racer):
    out = _run(racer, "looker", "--name", "x", "--ctl", "/dev/full", "--count", "25000")
    doc = json.loads(out)
    assert doc["format"] == 3
    res = parse_role_output(out)
    calls = res.events.calls
    assert calls.op == "lookup" and calls.failures_total == 25000
    assert len(calls.failures) == MAX_FAILURES, "only the first 20 000 failures are kept"
    assert all(f.errno == "ENOSPC" for f in calls.failures)
    ends = [f.end_ms for f in calls.failures]
    assert ends == sorted(ends) and all(f.start_ms <= f.end_ms for f in calls.failures)
    assert ends[-1] <= res.duration_ms + 1
    assert sum(calls.done) == 25000 and sum(calls.ok) == 0 and calls.bin_ms == 100
    assert len(calls.done) == len(calls.ok) == res.duration_ms // 100 + 1
    lookup = res.ops["lookup"]
    assert lookup.hist_failed == lookup.hist and lookup.has_failed_hist and lookup.hist_ok == ()
    assert res.events.windows == () and res.events.start_ns > 0


def test_successful_calls_fill_the_rate_and_not_the_failures(racer):
    res = parse_role_output(_run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--count", "3000"))
    calls = res.events.calls
    assert calls.failures == () and calls.failures_total == 0
    assert sum(calls.done) == sum(calls.ok) == 3000
    lookup = res.ops["lookup"]
    assert lookup.hist_failed == () and lookup.hist_ok == lookup.hist
    assert lookup.ok_live == 3000, "no unloader ran: every success had the module live"


def test_a_format_1_racer_has_no_events():
    old = {
        "role": "looker",
        "name": "x",
        "duration_ms": 10,
        "iterations": 1,
        "ops": {"lookup": {"total": 1, "ok": 1, "errors": {}, "latency_us": {}}},
    }
    res = parse_role_output(json.dumps(old))
    assert res.events is None and res.error is None
    assert timeline([res]) is None


def test_malformed_events_are_a_role_error():
    doc = {
        "format": 2,
        "role": "unloader",
        "name": "x",
        "ops": {},
        "events": {"start_ns": 1, "unloads": {"total": 1, "windows": [[1, 2]]}},
    }
    assert parse_role_output(json.dumps(doc), role="unloader").error.startswith("malformed racer output")


# ---------------------------------------------------------------- a synthetic race

START = 5_000_000_000  # the unloader's start on the guest's CLOCK_MONOTONIC (ns)
LOOKER_LATE_US = 500  # the looker left the barrier 0.5 ms after the unloader
WINDOWS_US = [(1_000_000, 1_200_000, 1_250_000), (2_000_000, 2_210_000, 2_260_000), (3_000_000, 3_205_000, 3_240_000)]
# looker-relative (start, end) of each failure, and its errno
FAILURES_US = [(1_100_000, 1_100_300, "ENODEV"), (2_150_000, 2_150_100, "ENODEV"), (2_230_000, 2_230_500, "ENOENT")]


def synthetic_roles() -> list[RoleResult]:
    unloader = {
        "format": 2,
        "role": "unloader",
        "name": "rc_prov0",
        "duration_ms": 4000,
        "iterations": 9,
        "ops": {
            "delete_module": {"total": 9, "ok": 3, "errors": {"EAGAIN": 6}},
            "load": {"total": 3, "ok": 3, "errors": {}},
        },
        "events": {
            "start_ns": START,
            "unloads": {"total": 3, "windows": [[b, d, r, None, None] for b, d, r in WINDOWS_US]},
        },
    }
    lat_ns = [(e - s) * 1000 for s, e, _ in FAILURES_US]
    ok_ns = [2_000_000] * 37
    buckets = lambda ns: [list(b) for b in hist_of(ns)]  # noqa: E731
    looker = {
        "format": 2,
        "role": "looker",
        "name": "rc_prov0",
        "duration_ms": 4000,
        "iterations": 40,
        "ops": {
            "lookup": {
                "total": 40,
                "ok": 37,
                "errors": {"ENODEV": 2, "ENOENT": 1},
                "failed_during_unload": 3,
                "failed_by_unloads_met": [0, 3, 0],
                "latency_us": {"p50": 2000, "p90": 2000, "p99": 2000, "max": 2000},
                "hist": {"sub_bits": 7, "buckets": buckets(lat_ns + ok_ns)},
                "hist_failed": {"sub_bits": 7, "buckets": buckets(lat_ns)},
            }
        },
        "events": {
            "start_ns": START + LOOKER_LATE_US * 1000,
            "calls": {
                "op": "lookup",
                "failures_total": 3,
                "failures": [list(f) for f in FAILURES_US],
                "bin_ms": 100,
                "done": [1] * 40,
                "ok": [1] * 10 + [0] + [1] * 20 + [0, 0] + [1] * 7,
            },
        },
    }
    return [parse_role_output(json.dumps(d)) for d in (unloader, looker)]


def synthetic_run(scheme: str = "refcount"):
    return summarise_run(scheme, "lookup", synthetic_roles(), [], RunEnd.COMPLETED, "", "python -m harness race", 4.2)


def test_timeline_puts_every_role_on_the_first_roles_clock():
    run = synthetic_run()
    tl = run.timeline
    assert tl.windows == tuple(UnloadWindow(b / 1000, d / 1000, r / 1000, module="rc_prov0") for b, d, r in WINDOWS_US)
    assert tl.windows_total == 3
    lookups = tl.calls["lookup"]
    late = LOOKER_LATE_US / 1000
    assert lookups.failures == tuple(
        CallFailure(s / 1000 + late, e / 1000 + late, errno) for s, e, errno in FAILURES_US
    )
    for f in lookups.failures:  # every synthetic failure lies inside an unload window
        assert any(w.begin_ms <= f.end_ms <= w.reloaded_ms for w in tl.windows), f
    assert lookups.failures_total == 3 and sum(lookups.done) == 40 and sum(lookups.ok) == 37
    assert run.spurious_failures == 3, "the verdict's counts are the ops', untouched by events"


def test_the_json_report_carries_the_events():
    doc = json.loads(json.dumps(synthetic_run().to_json()))
    ev = doc["events"]
    assert ev["unloads"]["total"] == 3
    assert ev["unloads"]["windows"][1] == [2000.0, 2210.0, 2260.0, None, None, "rc_prov0"]
    assert ev["calls"]["lookup"]["failures"][2] == [2230.5, 2231.0, "ENOENT"]
    assert ev["calls"]["lookup"]["failures_total"] == 3 and len(ev["calls"]["lookup"]["done"]) == 40
    assert doc["ops"]["lookup"]["hist_failed"], "the failed calls' latencies, for the CDF"


def test_fsmounter_events_are_named_like_its_ops():
    fsm = {
        "format": 2,
        "role": "fsmounter",
        "name": "x",
        "duration_ms": 100,
        "iterations": 1,
        "ops": {"mount": {"total": 1, "ok": 0, "errors": {"ENODEV": 1}}},
        "events": {
            "start_ns": 7,
            "calls": {"op": "mount", "failures_total": 1, "failures": [[10, 20, "ENODEV"]], "done": [1], "ok": [0]},
        },
    }
    tl = timeline([parse_role_output(json.dumps(fsm))])
    assert list(tl.calls) == ["fsmount"] and tl.calls["fsmount"].failures[0].end_ms == 0.02
