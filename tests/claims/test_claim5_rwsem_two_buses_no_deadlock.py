"""Claim 5 (Adam Richter): a module may register several rwsems; taking them
in a sorted order in delete_module avoids deadlock ("it is important that
these locks normally not be held simultaneously for any other reason")."""

import pytest

from harness.racer import RoleSpec
from harness.report import RunEnd
from harness.vm import VmConfig

from claimlib import op_dict, run_roles, scheme_for

DURATION_MS = 15000


@pytest.mark.parametrize("variant", ["rwsem", "rwsem-deferred"])
def test_claim5_rwsem_two_buses_no_deadlock(variant, claim_guest, record_property):
    """Two providers on two buses registered in opposite orders (prov0: 0,1;
    prov1: 1,0): lookups on both buses (prov0 via bus 1, prov1 via bus 0)
    while two unloaders remove and reload both providers for 15 s, with
    hung_task_timeout_secs=5.  Measures every role's counts; the claim holds if
    every role finishes (no hang), unloads of both providers happened, and the
    console shows no hung-task/lockdep or other splat."""
    scheme = scheme_for("claim5", variant)
    g = claim_guest(scheme, providers=2, buses=2,
                    knobs=(("call_delay_us", 1000), ("exit_delay_ms", 20)),
                    config=VmConfig(hung_task_timeout_s=5))
    m = g.m(scheme)
    p0, p1 = m.spec.provider_names
    ctl = m.spec.ctl_device
    g.sh(f"/sbin/modprobe {p1}")
    params = " ".join(f"{k}={v}" for k, v in g.knobs)  # reloads keep the knobs
    roles = [
        RoleSpec("unloader", name=p0, ko=g.ko(scheme, 0), params=params, pause_us=20000),
        RoleSpec("unloader", name=p1, ko=g.ko(scheme, 1), params=params, pause_us=20000),
        RoleSpec("looker", name=p0, ctl=ctl, bus=1),
        RoleSpec("looker", name=p1, ctl=ctl, bus=0),
    ]
    outcome = run_roles(g, roles, DURATION_MS)
    results = outcome.results
    splats = g.splats()
    measured = {"scheme": scheme, "seconds": round(outcome.seconds, 1), "end": outcome.end.value,
                "splats": [f"{s.kind}: {s.title}" for s in splats],
                "unload_prov0": op_dict(results[0], "delete_module"),
                "unload_prov1": op_dict(results[1], "delete_module"),
                "lookup_prov0_bus1": op_dict(results[2], "lookup"),
                "lookup_prov1_bus0": op_dict(results[3], "lookup"),
                "role_errors": [r.error for r in results if r.error]}
    for k in ("unload_prov0", "unload_prov1"):
        measured[k].pop("latency_us", None)
    record_property("measured", measured)
    assert outcome.end is RunEnd.COMPLETED, f"{scheme}: {outcome.end.value} {outcome.detail}"
    assert not measured["role_errors"], f"{scheme}: {measured['role_errors']}"
    assert splats == [], f"{scheme}: {measured['splats']}"
    assert measured["unload_prov0"]["ok"] > 0 and measured["unload_prov1"]["ok"] > 0, measured
    assert measured["lookup_prov0_bus1"]["total"] > 0 and measured["lookup_prov1_bus0"]["total"] > 0, measured
