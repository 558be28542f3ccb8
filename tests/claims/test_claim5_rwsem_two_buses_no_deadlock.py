"""Claim 5 (Adam Richter): a module may register several rwsems; taking them
in a sorted order in delete_module avoids deadlock ("it is important that
these locks normally not be held simultaneously for any other reason").

`rwsem-unsorted` is the lock-order control: the same scheme with the chain in
registration order, the ABBA that sorting prevents.  On a kernel with
CONFIG_PROVE_LOCKING the claim is that lockdep names the two bus rwsems for
it and for nothing else; without lockdep only a real deadlock can show, so
what it does there is recorded as a fact of that kernel."""

import pytest
from claimlib import guest_uptime, op_dict, printk_seconds, run_roles, scheme_for

from harness.guest.vm import VmConfig
from harness.race.engine import RaceSpec
from harness.race.outcomes import Control, RunEnd, Verdict, problem, summarise_run
from harness.race.schemerace import roles_for
from harness.race.schemes import SCHEMES, WORKLOADS, LockOrder

WORKLOAD = "twobus"  # harness/race/schemes.py: `harness race --workload twobus` runs the same roles
DURATION_S = 15
SLACK_S = 45  # a role still running this long after the deadline is a hang


@pytest.mark.parametrize(
    "variant",
    [
        "rwsem",
        "rwsem-deferred",
        pytest.param("rwsem-unsorted", marks=pytest.mark.expect_splat),  # checks its splats itself
    ],
)
def test_claim5_rwsem_two_buses_no_deadlock(variant, kernel, claim_guest, record_property):
    """Two providers on two buses registered in opposite orders (prov0: 0,1;
    prov1: 1,0): lookups on both buses (prov0 via bus 1, prov1 via bus 0)
    while two unloaders remove and reload both providers for 15 s, with
    hung_task_timeout_secs=5 (both times the kernel's time factor).  Measures
    every role's counts.  Sorted (rwsem, rwsem-deferred): every role
    finishes, both providers were unloaded, and
    the console shows no hung-task, lockdep or other splat.  rwsem-unsorted:
    with lockdep, a lockdep report naming both bus rwsems; without, either a
    deadlock of the gate that the hung-task detector reports, or no deadlock
    this time (a fact), and never a crash or another splat."""
    scheme = scheme_for("claim5", variant)
    lockdep = kernel.lockdep
    hung_s = WORKLOADS[WORKLOAD].hung_task_timeout_s  # slower kernels get longer
    g = claim_guest(
        scheme,
        providers=2,
        buses=2,
        knobs=(("call_delay_us", 1000), ("exit_delay_ms", 20)),
        config=VmConfig(hung_task_timeout_s=round(hung_s * kernel.time_factor)),
    )
    m = g.m(scheme)
    g.sh(f"/sbin/modprobe {m.spec.provider_names[1]}")
    spec = RaceSpec(
        kernel=g.kernel_spec,
        schemes=(scheme,),
        workloads=(WORKLOAD,),
        duration_s=DURATION_S,
        knobs=g.knobs,
        unload_pause_ms=20,
    )
    roles = roles_for(WORKLOAD, m, spec, g.release)
    started = guest_uptime(g)
    outcome = run_roles(g, roles, DURATION_S * 1000, slack_s=SLACK_S)
    results = outcome.results
    splats = g.splats()
    run = summarise_run(
        scheme, WORKLOAD, results, splats, outcome.end, outcome.detail, spec.repro(), outcome.seconds, lockdep=lockdep
    )
    hung = [s for s in splats if s.kind == "hung_task"]
    measured = {
        "scheme": scheme,
        "lockdep": lockdep,
        "seconds": round(outcome.seconds, 1),
        "end": outcome.end.value,
        "verdict": run.verdict.value,
        "control": run.control.value,
        "splats": [f"{s.kind}: {s.title}" for s in splats][:6],
        "unload_prov0": op_dict(results[0], "delete_module"),
        "unload_prov1": op_dict(results[1], "delete_module"),
        "lookup_prov0_bus1": op_dict(results[2], "lookup"),
        "lookup_prov1_bus0": op_dict(results[3], "lookup"),
        "role_errors": [r.error for r in results if r.error],
    }
    if hung:
        measured["hung_task_reports"] = len(hung)
        first = printk_seconds(hung[0].lines[0])
        measured["first_hung_task_report_s"] = None if first is None else round(first - started, 1)
    for k in ("unload_prov0", "unload_prov1"):
        measured[k].pop("latency_us", None)
    record_property("measured", measured)

    crashes = sorted({s.kind.value for s in splats if s.crash})
    assert not crashes, f"{scheme}: {measured['splats']}"
    if SCHEMES[variant].lock_order is LockOrder.SORTED:
        assert outcome.end is RunEnd.COMPLETED, f"{scheme}: {outcome.end.value} {outcome.detail}"
        assert not measured["role_errors"], f"{scheme}: {measured['role_errors']}"
        assert splats == [], f"{scheme}: {measured['splats']}"
        assert measured["unload_prov0"]["ok"] > 0 and measured["unload_prov1"]["ok"] > 0, measured
        assert measured["lookup_prov0_bus1"]["total"] > 0 and measured["lookup_prov1_bus0"]["total"] > 0, measured
        assert problem(run) is None, problem(run)
        return

    if lockdep:
        fired = [s for s in splats if s.kind == "lockdep"]
        measured["lockdep_title"] = fired[0].title if fired else None
        record_property("measured", measured)
        assert run.control is Control.FIRED, (
            f"{scheme}: no lockdep report naming {m.prefix}_bus0_rwsem and {m.prefix}_bus1_rwsem: {measured['splats']}"
        )
        assert problem(run) is None, problem(run)
        return

    # No lockdep: what the ABBA does here is a fact of this kernel.
    record_property("kind", "fact")
    assert {s.kind for s in splats} <= {"hung_task"}, f"{scheme}: {measured['splats']}"
    deadlocked = outcome.end is RunEnd.HUNG
    assert deadlocked == bool(hung), (
        f"{scheme}: roles {'hung' if deadlocked else 'finished'} but {len(hung)} hung-task report(s)"
    )
    if deadlocked:
        # rwsems_wlock() is usually inlined into the gate
        gate = (f"{m.prefix}_gate_run+0x", "rwsems_wlock+0x")
        assert any(f in ln for s in hung for ln in s.lines for f in gate), (
            f"{scheme}: no hung task waits in the gate: {measured['splats']}"
        )
        assert run.control is Control.FIRED and run.verdict is Verdict.WARNED
    else:
        assert run.control is Control.NOT_HIT, run.control
        assert measured["unload_prov0"]["ok"] > 0 and measured["unload_prov1"]["ok"] > 0, measured
    assert problem(run) is None, problem(run)
