"""The racer's output parsing and merge maths, and the racer binary itself run
on the host with a role that needs no kernel module (looker on /dev/null)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from harness.racer import OpStats, RoleResult, build_racer, merge_ops, parse_role_output

SAMPLE = {"role": "looker", "name": "rc_prov0", "duration_ms": 1000, "iterations": 10,
          "ops": {"lookup": {"total": 10, "ok": 7, "errors": {"ENODEV": 3}, "failed_during_unload": 2,
                             "latency_us": {"p50": 1.5, "p90": 3.0, "p99": 9.0, "max": 12.0}}}}


def test_parse_takes_the_last_json_line():
    text = "noise\n{\"broken\n" + json.dumps(SAMPLE) + "\n"
    res = parse_role_output(text)
    assert res.role == "looker" and res.iterations == 10 and res.error is None
    assert res.ops["lookup"] == OpStats(10, 7, {"ENODEV": 3}, 2, {"p50": 1.5, "p90": 3.0, "p99": 9.0, "max": 12.0})
    assert res.ops["lookup"].failed == 3


def test_parse_without_json_is_a_role_error_not_an_exception():
    res = parse_role_output("", role="looker", exit_status=-1, stderr="Killed\n")
    assert res.role == "looker" and res.ops == {}
    assert "killed" in res.error and "Killed" in res.error


def test_merge_sums_counts_and_keeps_worst_latency():
    a = {"mount": OpStats(10, 8, {"ENODEV": 2}, 1, {"p50": 1, "p90": 2, "p99": 3, "max": 4})}
    b = {"mount": OpStats(5, 4, {"ENODEV": 1, "EBUSY": 0}, 0, {"p50": 5, "p90": 1, "p99": 1, "max": 9}),
         "umount": OpStats(4, 4, {}, 0, {"p50": 1, "p90": 1, "p99": 1, "max": 1})}
    m = merge_ops([a, b])
    assert m["mount"].total == 15 and m["mount"].ok == 12 and m["mount"].errors == {"ENODEV": 3, "EBUSY": 0}
    assert m["mount"].latency_us == {"p50": 5, "p90": 2, "p99": 3, "max": 9}
    assert m["umount"].total == 4


@pytest.fixture(scope="module")
def racer():
    return str(build_racer())


def _run(racer, *args, timeout=20):
    return subprocess.run([racer, *args], capture_output=True, text=True, timeout=timeout)


def test_count_is_honoured_and_percentiles_are_ordered(racer):
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--count", "5000")
    doc = parse_role_output(res.stdout)
    lookup = doc.ops["lookup"]
    assert res.returncode == 0 and doc.iterations == 5000 and lookup.total == lookup.ok == 5000
    lat = lookup.latency_us
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_deadline_is_honoured(racer):
    t0 = time.monotonic()
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms", "300")
    elapsed = time.monotonic() - t0
    assert res.returncode == 0 and 0.29 < elapsed < 2.0
    assert 290 <= parse_role_output(res.stdout).duration_ms <= 1000


def test_missing_control_device_is_a_json_error(racer):
    res = _run(racer, "looker", "--name", "x", "--ctl", "/nonexistent/ctl", "--count", "3")
    assert res.returncode == 1
    assert parse_role_output(res.stdout).error == "cannot open the control device"


@pytest.mark.parametrize("args", [[], ["looker"], ["looker", "--name", "x", "--count", "many"],
                                  ["bogus", "--name", "x"], ["looker", "--name", "x", "--nope"]])
def test_bad_usage_exits_2_with_a_message(racer, args):
    res = _run(racer, *args)
    assert res.returncode == 2 and res.stderr.startswith("racer: ") and res.stdout == ""


def test_barrier_starts_roles_together(racer, tmp_path):
    bar = str(tmp_path / "bar")
    args = ["looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms", "200", "--barrier", bar,
            "--parties", "2"]
    first = subprocess.Popen([racer, *args], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert first.poll() is None, "the first role must wait at the barrier for the second"
    second = subprocess.run([racer, *args], capture_output=True, text=True, timeout=10)
    out, _ = first.communicate(timeout=10)
    a, b = parse_role_output(out), parse_role_output(second.stdout)
    assert a.error is None and b.error is None
    assert a.duration_ms < 450, "the first role ran its 200 ms after the barrier, not before"


def test_sigterm_still_prints_the_json(racer):
    proc = subprocess.Popen([racer, "looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms",
                             "60000"], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    res = parse_role_output(out)
    assert proc.returncode == 0 and res.error is None and res.iterations > 0
    assert res.duration_ms < 5000


def test_role_result_failed_constructor():
    assert RoleResult.failed("looker", "x") == RoleResult(role="looker", error="x")
