"""The race engine against a real guest: the racer's counting, the barrier,
the deadline, and a guest that dies mid-race (a result, not a harness error)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from harness.guest.vm import VmConfig
from harness.race.engine import RaceSpec
from harness.race.kbuild import ModuleSetSpec, build
from harness.race.outcomes import RunEnd, Verdict
from harness.race.racer import RoleSpec, parse_role_output
from harness.race.schemerace import prepare_guest, run_one


@pytest.fixture
def rc_guest(kernel, vm_factory):
    mods = build(kernel, ModuleSetSpec("refcount"))
    vm = vm_factory(modules=tuple(mods.ko_files))
    prepare_guest(vm, mods, RaceSpec(schemes=("refcount",), knobs=()))
    return vm, mods


def _racer(vm, spec: RoleSpec):
    res = vm.ssh.run(spec.command(), timeout=120)
    return res, parse_role_output(res.stdout, exit_status=res.exit_status, stderr=res.stderr)


def _looker(name: str, **kw) -> RoleSpec:
    return RoleSpec("looker", name=name, ctl="/dev/rc_ctl", **kw)


def test_racer_counts_known_outcomes(rc_guest):
    vm, _ = rc_guest
    _, ok = _racer(vm, _looker("rc_prov0", count=300, check_result=0))
    assert (ok.ops["lookup"].total, ok.ops["lookup"].ok) == (300, 300)
    _, wrong = _racer(vm, _looker("rc_prov1", count=5, check_result=0))
    assert wrong.ops["lookup"].errors == {"EWRONGRESULT": 5}, "provider 1 answers 1, not 0"
    _, miss = _racer(vm, _looker("rc_nosuch", count=10))
    assert miss.ops["lookup"].errors == {"ENOENT": 10}
    _, mnt = _racer(vm, RoleSpec("mounter", name="rc_prov0", fstype="rcfs", dir="/mnt/bus", count=50))
    assert mnt.ops["mount"].ok == 50 and mnt.ops["umount"].ok == 50


def test_unloader_counts_in_use_refusals(rc_guest):
    vm, _ = rc_guest
    holder = vm.ssh.start(RoleSpec("holder", name="rc_prov0", ctl="/dev/rc_ctl", count=1, hold_us=3000000).command())
    assert vm.wait_guest("[ $(cat /sys/module/rc_prov0/refcnt) -ge 1 ]", timeout=30), "the holder took no reference"
    _, unl = _racer(vm, RoleSpec("unloader", name="rc_prov0", load="modprobe", count=3))
    assert unl.ops["delete_module"].errors == {"EAGAIN": 3}
    assert unl.ops["load"].total == 0, "nothing to reload after a refused unload"
    held = parse_role_output(holder.wait(30).stdout)
    assert held.ops["hold"].ok == 1 and held.ops["release"].ok == 1
    _, unl = _racer(vm, RoleSpec("unloader", name="rc_prov0", load="modprobe", count=2))
    assert unl.ops["delete_module"].ok == 2 and unl.ops["load"].ok == 2


def test_barrier_and_deadline(rc_guest):
    vm, _ = rc_guest
    both = _looker("rc_prov0", duration_ms=1500, barrier="/dev/shm/t.bar", parties=2).command()
    vm.ssh.run("rm -f /dev/shm/t.bar", check=True)
    first = vm.ssh.start(both)
    assert vm.wait_guest("test -s /dev/shm/t.bar", timeout=30), "the first party never reached the barrier"
    # The stimulus, not a wait: the first party stands at the barrier 2 s, which
    # its deadline must not count.
    time.sleep(2.0)
    second = vm.ssh.run(both, timeout=60)
    a = parse_role_output(first.wait(60).stdout)
    b = parse_role_output(second.stdout)
    assert a.error is None and b.error is None
    for r in (a, b):
        assert 1500 <= r.duration_ms < 2500, "the deadline counts from the barrier"
    lone = vm.ssh.run(_looker("rc_prov0", duration_ms=100, barrier="/dev/shm/lonely", parties=2).command(), timeout=60)
    assert lone.exit_status == 3 and json.loads(lone.stdout)["error"] == "barrier timeout"


@pytest.mark.expect_splat
def test_guest_dying_mid_race_is_a_result(kernel, vm_factory):
    mods = build(kernel, ModuleSetSpec("refcount"))
    vm = vm_factory(modules=tuple(mods.ko_files), config=VmConfig(accel="tcg"))
    spec = RaceSpec(schemes=("refcount",), workloads=("lookup",), duration_s=20, knobs=())
    prepare_guest(vm, mods, spec)
    vm.ssh.run("echo 1 > /proc/sys/kernel/sysrq", check=True)

    def crash() -> None:
        try:
            vm.wait_guest("cat /proc/[0-9]*/comm | grep -qx racer", timeout=60)  # mid-race: racers run
            vm.ssh.start("echo c > /proc/sysrq-trigger")
        except Exception:
            pass

    threading.Thread(target=crash, daemon=True).start()
    t0 = time.monotonic()
    run = run_one(vm, mods, spec, "refcount", "lookup", vm.image.kernel.release)
    assert time.monotonic() - t0 < 20, "a dead guest must end the run early"
    assert run.verdict is Verdict.CRASHED
    assert run.end in (RunEnd.GUEST_DIED, RunEnd.SSH_LOST)
    assert any("sysrq" in s.title.lower() or s.kind in ("panic", "oops", "bug") for s in run.splats)
