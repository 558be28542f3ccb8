"""The JSON report reads back as the report it was written from: real
RaceReports from the race engine on fake guests, and a simulated one with
timelines."""

from __future__ import annotations

import json
from pathlib import Path

import htmlsim
from fakeguest import OOPS, WARNING, Behaviour, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness.guest.snapshot import ColdReason, GuestStart, StartPath
from harness.race import engine as race
from harness.race import kinds
from harness.race.outcomes import RaceReport, Verdict, reports_from_json

MODULES = "[   12.000003] Modules linked in: rc_prov1 rc_core [last unloaded: rc_prov0]\n"
WARNING_WITH_MODULES = WARNING.replace(
    "---[ end trace", "Modules linked in: rc_prov1 rc_core [last unloaded: rc_prov0]\n[   12.000002] ---[ end trace"
)
STARTS = {
    "refcount": GuestStart(StartPath.RESTORED, snapshot="k1"),
    "unsafe": GuestStart(StartPath.COLD, ColdReason.STALE, "the kernel changed", "k2", saved=True),
}


class StartedStages(FakeStages):
    """Fake guests that say how they started, as a real Vm does."""

    def boot(self, name, payload):
        guest = super().boot(name, payload)
        guest.start = STARTS.get(name.removeprefix("race-"))
        return guest


def engine_report() -> RaceReport:
    spec = race.RaceSpec(schemes=("refcount", "unsafe", "rwsem"), workloads=("lookup", "mount"), duration_s=0.2, seed=3)
    stages = StartedStages(
        {
            "refcount": Behaviour(console=WARNING_WITH_MODULES, lookups=(100, 90)),
            "unsafe": Behaviour(console=OOPS, killed_roles=("looker",)),
            "rwsem": Behaviour(boot_console=WARNING, debug_locks=(1, 0)),
        },
        lockdep=True,
        kasan=True,
    )
    report, _ = kinds.race(spec, stages=stages)
    return report


def test_a_report_reads_back_equal_to_itself():
    reports = [engine_report(), htmlsim.report()]
    doc = json.loads(json.dumps([r.to_json() for r in reports]))
    back = reports_from_json(doc)
    assert back == reports
    assert [r.to_json() for r in back] == doc
    # What the round trip carried (so that the equality above says something):
    rep = back[0]
    assert rep.lockdep and rep.kasan and dict(rep.knobs) == {"call_delay_us": 1000, "exit_delay_ms": 200}
    verdicts = {(r.scheme, r.verdict) for r in rep.runs}
    assert {("refcount", Verdict.WARNED), ("unsafe", Verdict.CRASHED), ("rwsem", Verdict.BROKEN)} <= verdicts
    warned = next(r for r in rep.runs if r.scheme == "refcount")
    assert warned.splats[0].modules == ("rc_prov1", "rc_core") and warned.splats[0].last_unloaded == "rc_prov0"
    assert warned.guest_start == STARTS["refcount"] and warned.spurious_failures == 10
    assert next(r for r in rep.runs if r.scheme == "unsafe").guest_start == STARTS["unsafe"]
    broken = next(r for r in rep.runs if r.scheme == "rwsem").guest
    assert broken.boot_splats and broken.debug_locks_before is True
    assert any(r.timeline is not None for r in back[1].runs)


def test_a_report_without_the_newer_fields_reads_with_their_defaults():
    doc = engine_report().to_json()
    for key in ("contention", "lockdep", "kasan"):
        del doc[key]
    (back,) = reports_from_json(json.loads(json.dumps(doc)))
    assert (back.contention, back.lockdep, back.kasan) == (0, False, False)


# ---------------------------------------------------------------- reports of the engine before it was one

OLD = Path(__file__).resolve().parents[1] / "data" / "reports-before-one-engine.json"
# What "no verdict without reach" added to every run and op, and the time
# to the first splat (with the timeline's origin on the guest's clock); then
# what a run did in its guest (replay) and its memory dump; then the run a
# stopped race was in.
ADDED = {
    "reach", "ok_live", "first_splat_ms", "unloads_before_splat", "origin_s", "replay", "dump", "frames_note",
    "interrupted",
}  # fmt: skip


def _without(doc, keys=ADDED | {"seconds"}):
    """A report document less the keys added since, and the run times (they vary)."""
    if isinstance(doc, dict):
        return {k: _without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_without(v, keys) for v in doc]
    return doc


def test_old_reports_read_back_unchanged():
    """Saved by the scheme and target pipelines before they were one engine."""
    old = json.loads(OLD.read_text())
    again = [r.to_json() for r in reports_from_json(old)]
    assert _without(again) == _without(old)
    assert all(run["reach"] == [] for rep in again for run in rep["runs"])  # never claimed for an old report
    assert all(run["replay"] is None and run["dump"] is None for rep in again for run in rep["runs"])


def test_the_one_engine_writes_the_old_pipelines_reports(monkeypatch, tmp_path):
    """The same fake races as in OLD, through today's engine: the same
    report, plus each run's reach and each op's ok_live."""
    from fakeguest import FakeGuest
    from harness.race import kinds, targetrace

    class TargetStages(FakeStages):
        def boot(self, name, payload):
            return FakeGuest(behaviour=Behaviour(lookups=(100, 60), errno="EOPNOTSUPP"))

    monkeypatch.setattr(targetrace, "resolve", lambda spec, k: targetrace.ResolvedTarget("dummy", kmods=("dummy",)))
    target, _ = kinds.race(race.RaceSpec(target="dummy", duration_s=0.1, hold=False), stages=TargetStages({}))
    new = [engine_report().to_json(), target.to_json()]
    old = json.loads(OLD.read_text())
    # The old pipelines' callers were quick only: today's `--no-hold` (held callers are the default since).
    for run in old[1]["runs"]:
        run["repro"] = run["repro"].replace(" --callers 1 ", " --callers 1 --no-hold ")
    assert _without(new, ADDED | {"seconds", "console_log"}) == _without(old, ADDED | {"seconds", "console_log"})
    assert [r["reach"][0]["ok_live"] for r in new[1]["runs"]] == [60]
