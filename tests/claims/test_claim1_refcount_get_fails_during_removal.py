"""Claim 1 (seed objection 2): with try_module_get, a get fails while the
module is being removed, so a caller racing an unload fails although the
module could be loaded again."""

from claimlib import race, run_summary, scheme_for

from harness.race.outcomes import RunEnd

EXIT_DELAY_MS = 200


def test_claim1_refcount_get_fails_during_removal(claim_guest, record_property):
    """refcount: try_module_get() refuses a module that is being removed, so a
    lookup or a mount racing an unload fails (ENODEV) although the provider
    stays installed and reloadable.  Measures, for a 10 s lookup race and a
    10 s mount race (exit_delay_ms=200, reload by finit_module), the spurious
    failures and their errnos; the claim holds if both workloads see
    spurious failures with ENODEV among them."""
    scheme = scheme_for("claim1", "refcount")
    g = claim_guest(scheme, knobs=(("call_delay_us", 1000), ("exit_delay_ms", EXIT_DELAY_MS)))
    measured = {"scheme": scheme}
    runs = {}
    for workload in ("lookup", "mount"):
        run = race(g, scheme, workload, duration_s=10)
        runs[workload] = run
        op = "lookup" if workload == "lookup" else "mount"
        measured[workload] = {
            "spurious": run.spurious_failures,
            "calls": run.op(op).total,
            "errors": run.op(op).errors,
            "unloads": run.unloads,
            "p99_us": run.op(op).latency_us.get("p99"),
        }
    measured["detail"] = {w: run_summary(r) for w, r in runs.items()}
    record_property("measured", measured)
    for workload, run in runs.items():
        assert run.end is RunEnd.COMPLETED and not run.role_errors, (
            f"{workload}: {run.end.value} {run.end_detail} {run.role_errors}"
        )
        assert run.unloads > 0, f"{workload}: no unload happened"
        op = "lookup" if workload == "lookup" else "mount"
        errors = run.op(op).errors
        assert run.spurious_failures > 0, f"{scheme}/{workload}: no spurious failure: every {op} survived the unloads"
        assert "ENODEV" in errors, f"{scheme}/{workload}: errnos {errors}, no ENODEV"
