"""Claim 4 (Adam Richter): with the rwsem gate, "there is no situation where
attempting to get [a provider] that is in the midst of being unloaded will
result in failure (instead, the access will wait until [it] has been
unregistered, and the modprobe will reload it)".  Measured per variant: it
holds for `rwsem-deferred`, not for `rwsem` as proposed."""

import pytest
from claimlib import contention, race, run_summary, scheme_for

from harness.race.outcomes import RunEnd

EXIT_DELAY_MS = 200
# The provider sleeps this long at the end of its exit, off the bus but not
# yet freed (GOING).  A lookup let in then misses, and request_module() cannot
# load a fresh copy while the old one is still there.
EXIT_TAIL_MS = 200
# The reloaded provider stays live this long, more than a request_module()
# round trip under TCG, so a waiting lookup meets one unload, as the claim
# says.  (With 100 ms, the slowest kernel's lookups sometimes met the next
# unload too: 6/263 ENOENT for rwsem-deferred on 6.12-rt.)
UNLOAD_PAUSE_MS = 500
RUNS = 2

# Does a lookup that meets an unload always succeed?  Measured on 6.1, 6.1-rt,
# 6.12 and 6.12-rt alike: `rwsem` releases the bus rwsems in the provider's
# exit, before the module is freed, so the waiting lookup misses and fails
# with ENOENT after every unload; `rwsem-deferred` releases them after
# delete_module() returned, and no lookup that meets one unload fails.
#
# The racer counts each failure by the unloads it overlapped.  A lookup that
# meets a *second* unload within one request_module() round trip can fail
# under both variants: the seed's lookup retries once, and nothing holds the
# freshly loaded provider before its second look (under host CPU contention
# request_module takes up to ~1 s under TCG).  That is recorded, not judged:
# the claim is about one unload.
CLAIM_HOLDS = {"rwsem": False, "rwsem-deferred": True}


@pytest.mark.parametrize("variant", ["rwsem", "rwsem-deferred"])
def test_claim4_rwsem_lookup_waits_and_finds_reloaded_module(variant, claim_guest, record_property):
    """A lookup that meets an unload waits for it and then finds the reloaded
    module.  Two 10 s lookup races per variant (exit_delay_ms=200,
    exit_tail_ms=200, call_delay_us=1000, reload by finit_module after a
    500 ms pause); measures failures by errno and lookup latency.  Asserts:
    unloads happened, no get was refused (no ENODEV), lookups waited out
    unloads (max latency >= exit_delay_ms), no failure without an unload,
    and the measured verdict of CLAIM_HOLDS for the lookups that met exactly
    one unload: none failed (rwsem-deferred), or some failed with ENOENT
    (rwsem).  Failures that met two or more unloads are recorded."""
    scheme = scheme_for("claim4", variant)
    g = claim_guest(
        scheme, knobs=(("call_delay_us", 1000), ("exit_delay_ms", EXIT_DELAY_MS), ("exit_tail_ms", EXIT_TAIL_MS))
    )
    runs = [race(g, scheme, "lookup", duration_s=10, seed=i + 1, unload_pause_ms=UNLOAD_PAUSE_MS) for i in range(RUNS)]
    failures = sum(r.spurious_failures for r in runs)
    met = [sum(r.failed_by_unloads_met[i] for r in runs) for i in range(3)]
    measured = {
        "scheme": scheme,
        "failures": failures,
        "contention": contention(),
        "failed_meeting_no_unload": met[0],
        "failed_meeting_one_unload": met[1],
        "failed_meeting_two_or_more_unloads": met[2],
        "lookups": [r.op("lookup").total for r in runs],
        "unloads": [r.unloads for r in runs],
        "lookup_errors": [r.op("lookup").errors for r in runs],
        "lookup_max_us": [r.op("lookup").latency_us.get("max") for r in runs],
        "detail": [run_summary(r) for r in runs],
    }
    record_property("measured", measured)
    record_property("claim_holds", met[1] == 0)
    for i, r in enumerate(runs):
        assert r.end is RunEnd.COMPLETED and not r.role_errors and not r.splats, (
            f"run {i}: {r.end.value} {r.role_errors} {[s.title for s in r.splats]}"
        )
        assert measured["unloads"][i] > 0, f"run {i}: no unload happened"
        errs = measured["lookup_errors"][i]
        assert "ENODEV" not in errs, f"{scheme} run {i}: a get was refused (ENODEV): {errs}"
        assert set(errs) <= {"ENOENT"}, f"{scheme} run {i}: lookup errnos {errs}"
        assert measured["lookup_max_us"][i] >= EXIT_DELAY_MS * 1000, (
            f"{scheme} run {i}: no lookup waited out an unload (max {measured['lookup_max_us'][i]} us)"
        )
    assert met[0] == 0, f"{scheme}: {met[0]} lookups failed without meeting any unload"
    if CLAIM_HOLDS[variant]:
        assert met[1] == 0, f"{scheme}: {met[1]} lookups met one unload and failed: {measured['lookup_errors']}"
    else:
        assert met[1] > 0, f"{scheme}: no lookup that met one unload failed; measured before: ENOENT after unloads"
