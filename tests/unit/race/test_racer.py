"""The racer: output parsing, histogram/percentile and merge maths, command
lines, and the binary itself run on the host with the one role that needs no
kernel module (looker on /dev/null).  Nothing here mounts or loads modules."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.guest import programs
from harness.guest.programs import build_racer
from harness.race.racer import (
    HIST_BUCKETS,
    OpStats,
    Role,
    RoleResult,
    RoleSpec,
    hist_index,
    hist_of,
    hist_value,
    latency_from_hist,
    merge_ops,
    parse_role_output,
    percentile,
    percentile_ns,
)

SAMPLE = {
    "role": "looker",
    "name": "rc_prov0",
    "duration_ms": 1000,
    "iterations": 10,
    "ops": {
        "lookup": {
            "total": 10,
            "ok": 7,
            "errors": {"ENODEV": 3},
            "failed_during_unload": 2,
            "latency_us": {"p50": 1.5, "p90": 3.0, "p99": 9.0, "max": 12.0},
        }
    },
}


# ---------------------------------------------------------------- parsing


def test_parse_takes_the_last_json_line():
    text = 'noise\n{"broken\n[1, 2]\n' + json.dumps(SAMPLE) + "\ntrailing garbage\n"
    res = parse_role_output(text)
    assert res.role == "looker" and res.iterations == 10 and res.error is None
    assert res.ops["lookup"] == OpStats(10, 7, {"ENODEV": 3}, 2, {"p50": 1.5, "p90": 3.0, "p99": 9.0, "max": 12.0})
    assert res.ops["lookup"].failed == 3


def test_parse_reads_the_histogram_and_first_failure():
    doc = json.loads(json.dumps(SAMPLE))
    doc["ops"]["lookup"].update(first_failure_ms=12.5, hist={"sub_bits": 7, "buckets": [[300, 4], [5, 6]]})
    op = parse_role_output(json.dumps(doc)).ops["lookup"]
    assert op.hist == ((5, 6), (300, 4)) and op.has_hist and op.first_failure_ms == 12.5


def test_parse_without_json_is_a_role_error_not_an_exception():
    res = parse_role_output("", role="looker", exit_status=-1, stderr="progress 5\nKilled\n")
    assert res.role == "looker" and res.ops == {}
    assert "killed" in res.error and "Killed" in res.error
    garbage = parse_role_output("\x00\xff not json {", role="mounter", exit_status=3)
    assert garbage.role == "mounter" and "exit status 3" in garbage.error


def test_parse_malformed_object_is_a_role_error():
    res = parse_role_output(json.dumps({"role": "looker", "ops": {"lookup": {"total": "many"}}}), role="looker")
    assert res.error.startswith("malformed racer output")


def test_parse_keeps_the_racers_own_error():
    res = parse_role_output(
        '{"role":"looker","name":"x","duration_ms":0,"iterations":0,"ops":{},"error":"barrier timeout"}'
    )
    assert res.error == "barrier timeout"


def test_role_result_failed_constructor():
    assert RoleResult.failed("looker", "x") == RoleResult(role="looker", error="x")


# ---------------------------------------------------------------- maths


def test_histogram_buckets_are_within_one_percent():
    rng = random.Random(1)
    for v in [0, 1, 127, 128, 129, 255, 256, 1000, 10**6, 10**9, 2**40] + [
        rng.randrange(1, 10**10) for _ in range(2000)
    ]:
        i = hist_index(v)
        assert 0 <= i < HIST_BUCKETS
        assert abs(hist_value(i) - v) <= max(0.5, v / 256), v  # middle of a <= 1/128-wide bucket
    assert [hist_index(v) for v in range(130)] == sorted(hist_index(v) for v in range(130))
    assert hist_index(10**18) == HIST_BUCKETS - 1


def test_percentile_nearest_rank():
    assert percentile([], 50) == 0.0
    assert percentile([5], 99) == 5.0
    vals = list(range(1, 101))
    assert (percentile(vals, 50), percentile(vals, 90), percentile(vals, 99), percentile(vals, 100)) == (
        50,
        90,
        99,
        100,
    )
    assert percentile([3, 1, 2], 50) == 2.0


def test_histogram_percentiles_match_raw_samples_to_one_percent():
    rng = random.Random(2)
    samples = [int(rng.lognormvariate(10, 1.5)) for _ in range(20000)]
    hist = hist_of(samples)
    for pm, p in ((500, 50), (900, 90), (990, 99)):
        exact = percentile(samples, p)
        assert abs(percentile_ns(hist, pm) - exact) <= exact / 100
    assert percentile_ns(hist, 990, max_ns=5) == 5  # capped at the exact maximum
    assert percentile_ns((), 500) == 0.0


def test_merge_sums_counts_and_keeps_worst_latency_without_histograms():
    a = {"mount": OpStats(10, 8, {"ENODEV": 2}, 1, {"p50": 1, "p90": 2, "p99": 3, "max": 4}, 30.0)}
    b = {
        "mount": OpStats(5, 4, {"ENODEV": 1, "EBUSY": 0}, 0, {"p50": 5, "p90": 1, "p99": 1, "max": 9}, 20.0),
        "umount": OpStats(4, 4, {}, 0, {"p50": 1, "p90": 1, "p99": 1, "max": 1}),
    }
    m = merge_ops([a, b])
    assert m["mount"].total == 15 and m["mount"].ok == 12 and m["mount"].errors == {"ENODEV": 3, "EBUSY": 0}
    assert m["mount"].failed_during_unload == 1 and m["mount"].first_failure_ms == 20.0
    assert m["mount"].latency_us == {"p50": 5, "p90": 2, "p99": 3, "max": 9}
    assert m["umount"].total == 4


def _stats(samples: list[int]) -> OpStats:
    hist = hist_of(samples)
    return OpStats(len(samples), len(samples), {}, 0, latency_from_hist(hist, max(samples) / 1000), None, hist)


def test_merge_with_histograms_is_exact():
    rng = random.Random(3)
    fast = [rng.randrange(1000, 2000) for _ in range(900)]
    slow = [rng.randrange(100000, 200000) for _ in range(100)]
    m = merge_ops([{"lookup": _stats(fast)}, {"lookup": _stats(slow)}])["lookup"]
    whole = _stats(fast + slow)
    assert m.hist == whole.hist and m.latency_us == whole.latency_us and m.total == 1000
    # the worst-of fallback would have said p50 >= 100 us; the exact merge knows it is ~1.5 us
    assert m.latency_us["p50"] < 2.1 and m.latency_us["p99"] > 100
    mixed = merge_ops(
        [{"lookup": _stats(fast)}, {"lookup": OpStats(1, 1, {}, 0, {"p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0})}]
    )
    assert mixed["lookup"].hist == () and mixed["lookup"].latency_us["p50"] == 7.0


# ---------------------------------------------------------------- command lines


def test_role_spec_argv_and_shell_command():
    spec = RoleSpec(
        "unloader",
        "rc_prov0",
        ko="/lib/modules/x/extra/rc_prov0.ko",
        params="exit_delay_ms=200 a=1",
        pause_us=0,
        duration_ms=15000,
        barrier="/dev/shm/b",
        parties=2,
        seed=7,
        progress=True,
    )
    assert spec.argv("/bin/racer") == [
        "/bin/racer",
        "unloader",
        "--name",
        "rc_prov0",
        "--ko",
        "/lib/modules/x/extra/rc_prov0.ko",
        "--params",
        "exit_delay_ms=200 a=1",
        "--duration-ms",
        "15000",
        "--pause-us",
        "0",
        "--barrier",
        "/dev/shm/b",
        "--parties",
        "2",
        "--seed",
        "7",
        "--progress",
    ]
    assert "--params 'exit_delay_ms=200 a=1'" in spec.command("/bin/racer")
    look = RoleSpec("looker", "rc_prov1", ctl="/dev/rc_ctl", bus=1, check_result=1, count=5)
    assert look.argv("r")[2:] == [
        "--name",
        "rc_prov1",
        "--ctl",
        "/dev/rc_ctl",
        "--bus",
        "1",
        "--check-result",
        "1",
        "--count",
        "5",
    ]
    assert RoleSpec("loader", "m", load="modprobe", unload=True).argv("r") == [
        "r",
        "loader",
        "--name",
        "m",
        "--load",
        "modprobe",
        "--unload",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(role="bogus", name="x"),
        dict(role="looker", name="x"),
        dict(role="mounter", name="x", dir="/mnt"),
        dict(role="unloader", name="x"),
        dict(role="unloader", name="x", load="insmod"),
        dict(role="looker", name="", ctl="/dev/c"),
        dict(role="looker", name="x", ctl="/dev/c", barrier="/tmp/b"),
    ],
)
def test_role_spec_rejects_what_the_racer_would(kwargs):
    with pytest.raises(HarnessError):
        RoleSpec(**kwargs)


# ---------------------------------------------------------------- the binary on the host


@pytest.fixture(scope="module")
def racer():
    return str(build_racer())


def _run(racer, *args, timeout=20):
    return subprocess.run([racer, *args], capture_output=True, text=True, timeout=timeout)


def test_build_is_warning_free_and_cached(racer, monkeypatch, tmp_path):
    proc = subprocess.run(
        ["gcc", *programs.CFLAGS, "-o", str(tmp_path / "r"), str(programs.RACER_SOURCE)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stderr == ""
    calls = []
    real = subprocess.run
    monkeypatch.setattr(programs.subprocess, "run", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert str(build_racer()) == racer and calls == []


def test_build_failure_names_the_compiler_errors(monkeypatch, tmp_path):
    bad = tmp_path / "racer.c"
    bad.write_text("int main(void) { return undeclared_thing; }\n")
    monkeypatch.setattr(programs, "RACER_SOURCE", bad)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(HarnessError, match="undeclared_thing"):
        build_racer()


def test_count_is_honoured_and_output_is_consistent(racer):
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--count", "5000")
    assert res.returncode == 0 and len(res.stdout.strip().splitlines()) == 1
    doc = parse_role_output(res.stdout)
    lookup = doc.ops["lookup"]
    assert doc.iterations == 5000 and lookup.total == lookup.ok == 5000 and lookup.errors == {}
    lat = lookup.latency_us
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lookup.has_hist and latency_from_hist(lookup.hist, lat["max"]) == lat  # host maths == racer maths


def test_deadline_is_honoured(racer):
    t0 = time.monotonic()
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms", "300")
    elapsed = time.monotonic() - t0
    doc = parse_role_output(res.stdout)
    assert res.returncode == 0 and 0.29 < elapsed < 2.0
    assert 300 <= doc.duration_ms <= 1000 and doc.iterations == doc.ops["lookup"].ok > 0


def test_missing_control_device_is_a_json_error(racer):
    res = _run(racer, "looker", "--name", "x", "--ctl", "/nonexistent/ctl", "--count", "3")
    assert res.returncode == 1
    assert parse_role_output(res.stdout).error == "cannot open the control device"


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["looker"],
        ["looker", "--name", "x", "--count", "many"],
        ["bogus", "--name", "x"],
        ["looker", "--name", "x", "--nope"],
        ["looker", "--name", "x", "--ctl"],
        ["mounter", "--name", "x"],
        ["unloader", "--name", "x"],
        ["unloader", "--name", "x", "--load", "insmod"],
    ],
)
def test_bad_usage_exits_2_with_a_message(racer, args):
    res = _run(racer, *args)
    assert res.returncode == 2 and res.stderr.startswith("racer: ") and res.stdout == ""


def test_barrier_starts_roles_together(racer, tmp_path):
    bar = str(tmp_path / "bar")
    args = ["looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms", "200", "--barrier", bar, "--parties", "2"]
    first = subprocess.Popen([racer, *args], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert first.poll() is None, "the first role must wait at the barrier for the second"
    t0 = time.monotonic()
    second = subprocess.run([racer, *args], capture_output=True, text=True, timeout=10)
    out, _ = first.communicate(timeout=10)
    t_both = time.monotonic() - t0
    a, b = parse_role_output(out), parse_role_output(second.stdout)
    assert a.error is None and b.error is None
    assert 200 <= a.duration_ms < 400 and 200 <= b.duration_ms < 400, "both ran their 200 ms after the barrier"
    assert t_both < 1.5
    stale = _run(racer, *args)  # the file now says 2 of 2 arrived: refuse instead of starting alone
    assert stale.returncode == 3 and "stale barrier" in parse_role_output(stale.stdout).error


def test_barrier_interrupted_by_sigterm_still_prints_json(racer, tmp_path):
    proc = subprocess.Popen(
        [racer, "looker", "--name", "x", "--ctl", "/dev/null", "--barrier", str(tmp_path / "b"), "--parties", "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    res = parse_role_output(out)
    assert proc.returncode == 3 and res.error == "interrupted at the barrier" and res.iterations == 0
    # it took its arrival back: the same file still holds a full 2-party barrier
    args = [
        "looker",
        "--name",
        "x",
        "--ctl",
        "/dev/null",
        "--count",
        "1",
        "--barrier",
        str(tmp_path / "b"),
        "--parties",
        "2",
    ]
    first = subprocess.Popen([racer, *args], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert first.poll() is None
    assert _run(racer, *args).returncode == 0 and first.wait(10) == 0


def test_sigterm_still_prints_the_json(racer):
    proc = subprocess.Popen(
        [racer, "looker", "--name", "x", "--ctl", "/dev/null", "--duration-ms", "60000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    res = parse_role_output(out)
    assert proc.returncode == 0 and res.error is None and res.iterations > 0
    assert res.iterations == res.ops["lookup"].total and res.duration_ms < 5000


def test_check_result_counts_wrong_results(racer):
    # /dev/null reads 0 bytes: every "successful" lookup has no result, so it is wrong
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/null", "--check-result", "0", "--count", "20")
    op = parse_role_output(res.stdout).ops["lookup"]
    assert res.returncode == 0 and op.total == 20 and op.ok == 0 and op.errors == {"EWRONGRESULT": 20}
    assert op.failed_during_unload == 0 and op.first_failure_ms is not None


def test_write_errors_are_named(racer):
    # /dev/full refuses writes with ENOSPC: errno names, not numbers
    res = _run(racer, "looker", "--name", "x", "--ctl", "/dev/full", "--count", "7")
    op = parse_role_output(res.stdout).ops["lookup"]
    assert op.total == 7 and op.ok == 0 and op.errors == {"ENOSPC": 7}


def test_jitter_and_pause_slow_the_loop(racer):
    res = _run(
        racer,
        "looker",
        "--name",
        "x",
        "--ctl",
        "/dev/null",
        "--count",
        "20",
        "--pause-us",
        "5000",
        "--jitter-us",
        "5000",
        "--seed",
        "3",
    )
    doc = parse_role_output(res.stdout)
    assert doc.iterations == 20 and 100 <= doc.duration_ms < 1500


def test_failures_by_unloads_met_parse_and_merge():
    doc = json.loads(json.dumps(SAMPLE))
    doc["ops"]["lookup"]["failed_by_unloads_met"] = [0, 1, 2]
    one = parse_role_output(json.dumps(doc)).ops["lookup"]
    assert one.failed_by_unloads_met == (0, 1, 2)
    assert parse_role_output(json.dumps(SAMPLE)).ops["lookup"].failed_by_unloads_met == (0, 0, 0), (
        "an older racer's output has none"
    )
    merged = merge_ops([{"lookup": one}, {"lookup": one}])["lookup"]
    assert merged.failed_by_unloads_met == (0, 2, 4)


def test_roles_say_what_they_do_and_keep_their_names():
    assert [r for r in Role if r.caller] == [Role.LOOKER, Role.MOUNTER, Role.FSMOUNTER, Role.CALLER]
    assert [r.caller_op for r in Role if r.caller] == ["lookup", "mount", "fsmount", None], (
        "a generic caller's calls are named by its op (tests/unit/test_ops.py)"
    )
    assert [Role.FSMOUNTER.op_name(op) for op in ("mount", "umount", "lookup")] == ["fsmount", "fsumount", "lookup"]
    assert Role.MOUNTER.op_name("mount") == "mount"
    assert {r for r in Role if r.mounts} == {Role.MOUNTER, Role.FSMOUNTER}
    assert {r for r in Role if r.loads} == {Role.UNLOADER, Role.LOADER}
    assert RoleSpec("looker", "x", ctl="/dev/c").role is Role.LOOKER
    assert RoleSpec(Role.MOUNTER, "x", dir="/mnt", fstype="xfs").argv("/r")[:2] == ["/r", "mounter"]
    assert RoleSpec(Role.LOADER, "x", load="modprobe").argv("/r") == [
        "/r",
        "loader",
        "--name",
        "x",
        "--load",
        "modprobe",
    ]
    assert f"{Role.HOLDER}" == "holder"
    res = parse_role_output(json.dumps({**SAMPLE, "role": "fsmounter"}))
    assert res.role is Role.FSMOUNTER and parse_role_output("", role="unloader").role is Role.UNLOADER
    assert parse_role_output(json.dumps({**SAMPLE, "role": "bogus"})).error.startswith("malformed racer output")


# ------------------------------------------------- $RACER_HOLD (exec callers)

_GONE, _CHANGES = 32, 40  # struct shared's offsets of gone and changes (racer.c)


def _exec_caller(racer, bar, cmd, count):
    spec = RoleSpec(Role.CALLER, name="x", op="exec", op_args=(cmd,), count=count, barrier=str(bar), parties=1)
    return subprocess.run(spec.argv(racer), capture_output=True, text=True, timeout=30)


def test_an_exec_command_gets_racer_hold_which_waits_its_ms_without_an_unload(racer, tmp_path):
    out = tmp_path / "hold"
    t0 = time.monotonic()
    res = _exec_caller(racer, tmp_path / "bar", f'echo "$RACER_HOLD" > {out}; $RACER_HOLD 300', 2)
    took = time.monotonic() - t0
    assert parse_role_output(res.stdout).ops["exec"].ok == 2
    words = out.read_text().split()
    assert words[:3] == [racer, "wait-unload", str(tmp_path / "bar")] and int(words[3]) > 0
    assert took >= 0.6, "each call waited its 300 ms: no unload came"


def test_racer_hold_returns_when_an_unload_is_done(racer, tmp_path):
    """An unload done (the unloader bumps gone, then wakes `changes`): the wait
    ends then, not at its 20 s."""
    import ctypes
    import mmap

    bar = tmp_path / "bar"
    bar.write_bytes(bytes(4096))
    deadline = time.monotonic_ns() + 60 * 10**9
    proc = subprocess.Popen([racer, "wait-unload", str(bar), str(deadline), "20000"])
    wchan = f"/proc/{proc.pid}/wchan"
    end = time.monotonic() + 10
    while "futex" not in open(wchan).read() and time.monotonic() < end:  # it sleeps on the futex
        time.sleep(0.01)
    t0 = time.monotonic()
    with open(bar, "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        m[_GONE : _GONE + 8] = (256).to_bytes(8, "little")
        m[_CHANGES : _CHANGES + 4] = (1).to_bytes(4, "little")
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m, _CHANGES))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(202, ctypes.c_void_p(addr), 1, 2**31 - 1, None, None, 0)  # FUTEX_WAKE (shared)
        assert proc.wait(timeout=10) == 0
        del addr
    assert time.monotonic() - t0 < 5


class _Shared:
    """The race's shared page as the unloader changes it: `gone` set, then
    `changes` bumped and its sleepers woken (racer.c shared_changed())."""

    def __init__(self, path):
        import mmap

        path.write_bytes(bytes(4096))
        self._f = open(path, "r+b")
        self.m = mmap.mmap(self._f.fileno(), 4096)

    def set_gone(self, gone):
        import ctypes

        self.m[_GONE : _GONE + 8] = gone.to_bytes(8, "little")
        changes = int.from_bytes(self.m[_CHANGES : _CHANGES + 4], "little") + 1
        self.m[_CHANGES : _CHANGES + 4] = changes.to_bytes(4, "little")
        word = ctypes.c_char.from_buffer(self.m, _CHANGES)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(202, ctypes.c_void_p(ctypes.addressof(word)), 1, 2**31 - 1, None, None, 0)  # FUTEX_WAKE
        del word


def _wait_lines(path, n, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().split()) >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never had {n} lines")


def _asleep_on_futex(pid, timeout=20):
    end = time.monotonic() + timeout
    while "futex" not in Path(f"/proc/{pid}/wchan").read_text():
        assert time.monotonic() < end, f"{pid} never slept on the futex"
        time.sleep(0.01)


def _hold_pid(bar, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue
            if b"wait-unload" in argv and str(bar).encode() in argv:
                return int(cmdline.parent.name)
        time.sleep(0.01)
    raise AssertionError("no $RACER_HOLD ran")


def _exec_caller_bg(racer, bar, cmd, count):
    spec = RoleSpec(Role.CALLER, name="x", op="exec", op_args=(cmd,), count=count, barrier=str(bar), parties=1)
    return subprocess.Popen(spec.argv(racer), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_exec_call_that_holds_is_judged_live_at_its_hold_and_rests_until_the_module_is_back(racer, tmp_path):
    """A call whose $RACER_HOLD began with the module live reached it, though
    an unload ended the hold (judged at its end, it would not have); its hold
    is no part of its latency; and the next call waits until the module is
    loaded again, as a held call does."""
    bar, log = tmp_path / "bar", tmp_path / "log"
    shared = _Shared(bar)
    proc = _exec_caller_bg(racer, bar, f"echo take >> {log}; $RACER_HOLD 20000", 2)
    _asleep_on_futex(_hold_pid(bar))
    shared.set_gone(256 + 1)  # an unload done, the module absent
    _asleep_on_futex(proc.pid)  # the caller rests
    assert len(log.read_text().split()) == 1, "the second call did not wait for the module to be back"
    shared.set_gone(256)  # loaded again
    _wait_lines(log, 2)
    _asleep_on_futex(_hold_pid(bar))
    shared.set_gone(512 + 1)  # the second hold ends at the next unload
    out, err = proc.communicate(timeout=20)
    calls = parse_role_output(out).ops["exec"]
    assert (calls.total, calls.ok, calls.ok_live) == (2, 2, 2), (calls, err)
    assert calls.latency_us["max"] < 250_000, "the hold was counted in the latency"


def test_an_exec_call_is_live_if_the_module_was_there_when_its_hold_began(racer, tmp_path):
    """A shell and its tools start slowly: whatever the module did since the
    call's start (absent then, or unloaded and loaded again), the call
    reached it if it was there when the hold began, and not if it was gone."""
    cases = ((256 + 1, 256, 1), (0, 256, 1), (0, 256 + 1, 0))  # gone at the start, at the hold; live
    for n, (start, at_hold, live) in enumerate(cases):
        bar, fifo, log = tmp_path / f"bar{n}", tmp_path / f"fifo{n}", tmp_path / f"log{n}"
        shared = _Shared(bar)
        shared.set_gone(start)
        os.mkfifo(fifo)
        proc = _exec_caller_bg(racer, bar, f"echo start > {log}; read x < {fifo}; $RACER_HOLD 20000", 1)
        _wait_lines(log, 1)  # the call has begun
        shared.set_gone(at_hold)
        fifo.write_text("go\n")
        _asleep_on_futex(_hold_pid(bar))
        shared.set_gone(1024 + 1)
        out, _ = proc.communicate(timeout=20)
        calls = parse_role_output(out).ops["exec"]
        assert (calls.total, calls.ok, calls.ok_live) == (1, 1, live), (start, at_hold, calls)


def test_an_exec_call_that_holds_nothing_is_judged_at_its_end(racer, tmp_path):
    """No $RACER_HOLD: an unload done during the call means it may not have
    reached the module."""
    bar, log = tmp_path / "bar", tmp_path / "log"
    shared = _Shared(bar)
    os.mkfifo(tmp_path / "fifo")
    proc = _exec_caller_bg(racer, bar, f"echo take >> {log}; read x < {tmp_path / 'fifo'}", 1)
    _wait_lines(log, 1)
    shared.set_gone(256 + 1)
    (tmp_path / "fifo").write_text("go\n")
    out, _ = proc.communicate(timeout=20)
    calls = parse_role_output(out).ops["exec"]
    assert (calls.total, calls.ok, calls.ok_live) == (1, 1, 0), calls


def test_racer_hold_on_a_barrier_it_cannot_map_exits_2(racer, tmp_path):
    res = _run(racer, "wait-unload", str(tmp_path / "no" / "bar"), "1", "10")
    assert res.returncode == 2 and "cannot map" in res.stderr
