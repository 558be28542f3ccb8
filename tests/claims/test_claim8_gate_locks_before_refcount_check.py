"""Claim 8 (Adam Richter): "sys_delete_module take[s] an exclusive lock ...
before checking the reference count, and it would remain held in the
module_exit routine"."""

from claimlib import op_dict, racer, scheme_for

from harness.race.racer import RoleSpec, parse_role_output

EXIT_DELAY_MS = 2000
CALL_DELAY_US = 2000000
MIN_WAIT_US = 1000000


def test_claim8_gate_locks_before_refcount_check(kernel, claim_guest, record_property):
    """(a) While `rmmod P_prov0` sleeps exit_delay_ms=2000 in exit, a
    lookup-call of P_prov1 on the same bus waits for the write lock (>= 1 s);
    (b) a lookup-call of P_prov0 that started before the unload (op sleeping
    call_delay_us=2000000) keeps the module: delete_module, which checks the
    refcount only after taking the lock, fails with EAGAIN and the lookup
    succeeds.  Measures the waiting lookup's latency, the rmmod result and
    the concurrent lookup's outcome."""
    scheme = scheme_for("claim8", "rwsem")
    # A slow (debug) guest takes longer to start the reader: the window and
    # the wait it must show grow with the kernel's time factor.
    exit_delay_ms = int(EXIT_DELAY_MS * kernel.time_factor)
    min_wait_us = MIN_WAIT_US * kernel.time_factor
    g = claim_guest(scheme, knobs=(("exit_delay_ms", exit_delay_ms),))
    m = g.m(scheme)
    p0, p1 = m.spec.provider_names
    ctl = m.spec.ctl_device
    g.sh(f"/sbin/modprobe {p1}")
    # (a) the reader waits while delete_module holds the bus for writing
    rm = g.vm.ssh.start(f"/sbin/rmmod {p0}")
    # GOING: past the gate's write lock and the refcount check, in the slow exit.
    assert g.vm.wait_guest(f"grep -qx going /sys/module/{p0}/initstate", timeout=30 * g.factor), f"rmmod {p0}"
    wait = racer(g, RoleSpec("looker", name=p1, ctl=ctl, check_result=1, count=1, duration_ms=20000))
    rm_res = rm.wait(30 * g.factor)
    a = {"lookup": op_dict(wait, "lookup"), "rmmod_exit": rm_res.exit_status}
    # (b) a get taken before the unload keeps the module
    g.sh(f"/sbin/modprobe {p0} exit_delay_ms=0 call_delay_us={CALL_DELAY_US}")
    bg = g.vm.ssh.start(RoleSpec("looker", name=p0, ctl=ctl, check_result=0, count=1, duration_ms=20000).command())
    # The lookup is inside the call: it holds its reference (__module_get).
    assert g.vm.wait_guest(f"[ $(cat /sys/module/{p0}/refcnt) -ge 1 ]", timeout=30 * g.factor), "no lookup in the call"
    un = racer(g, RoleSpec("unloader", name=p0, ko=g.ko(scheme, 0), count=1, duration_ms=20000))
    bg_res = bg.wait(30 * g.factor)
    look = parse_role_output(bg_res.stdout, role="looker")
    b = {"delete_module": op_dict(un, "delete_module"), "lookup": op_dict(look, "lookup")}
    b["delete_module"].pop("latency_us", None)
    measured = {"scheme": scheme, "a_wait_us": a["lookup"].get("latency_us", {}).get("max"), "a": a, "b": b}
    record_property("measured", measured)
    assert a["rmmod_exit"] == 0, f"(a) rmmod {p0}: {rm_res.stderr}"
    assert a["lookup"]["ok"] == 1, f"(a) lookup-call {p1} during the unload: {a['lookup']}"
    assert measured["a_wait_us"] >= min_wait_us, (
        f"(a) {scheme}: lookup-call {p1} did not wait for the write-locked bus: {measured['a_wait_us']} us"
    )
    assert b["delete_module"]["errors"] == {"EAGAIN": 1}, (
        f"(b) {scheme}: delete_module during an in-flight call: {b['delete_module']}"
    )
    assert b["lookup"]["ok"] == 1, f"(b) the in-flight lookup-call: {b['lookup']}"
