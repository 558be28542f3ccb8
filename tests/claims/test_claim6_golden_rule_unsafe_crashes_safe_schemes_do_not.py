"""Claim 6 (Rusty's Golden Rule): calling through a function pointer into
another module without holding a reference risks running in the module while
it is unloaded; holding one (refcount, or the rwsem scheme's __module_get under
the bus lock) does not."""

import pytest
from claimlib import race, run_summary, scheme_for

from harness.race.outcomes import Control, Verdict
from harness.race.schemes import SCHEMES


@pytest.mark.expect_splat  # checks the splats itself
@pytest.mark.parametrize("claimed", ["unsafe", "refcount", "rwsem"])
def test_claim6_golden_rule_unsafe_crashes_safe_schemes_do_not(claimed, claim_guest, record_property):
    """The negative control (no reference) crashes under the lookup race
    (call_delay_us=1000, exit_delay_ms=200, 10 s); refcount and rwsem under
    the identical race produce no splat.  Measures the race's verdict, splat
    titles, lookups and unloads."""
    scheme = scheme_for("claim6", claimed)
    g = claim_guest(scheme)
    run = race(g, scheme, "lookup", duration_s=10)
    splats = g.splats()
    kinds = sorted({s.kind for s in splats})
    record_property(
        "measured",
        {
            "scheme": scheme,
            "verdict": run.verdict.value,
            "control": run.control.value,
            "splats": [f"{s.kind}: {s.title}" for s in splats][:3],
            "lookups": run.op("lookup").total,
            "lookup_errors": run.op("lookup").errors,
            "unloads": run.unloads,
            "detail": run_summary(run),
        },
    )
    if SCHEMES[claimed].negative_control:
        assert any(s.crash for s in splats), (
            f"{scheme}: no crash under the race (verdict {run.verdict.value}, splats {kinds})"
        )
        assert run.verdict is Verdict.CRASHED
        assert run.control is Control.FIRED or not SCHEMES[scheme].negative_control
    else:
        assert splats == [], f"{scheme}: splats {[s.title for s in splats]}"
        assert run.verdict in (Verdict.CLEAN, Verdict.SPURIOUS), (
            f"{scheme}: verdict {run.verdict.value} {run.end_detail}"
        )
        assert run.unloads > 0, "no unload happened"
