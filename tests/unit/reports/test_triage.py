"""A survey's splats triaged by data rows (harness/reports/triage.py): the
row that matches the target and the title, or "not yet triaged"."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harness.guest.splat import Splat, SplatKind
from harness.race.kbuild import Knobs
from harness.race.outcomes import RaceReport, RunResult, TargetInfo, Verdict
from harness.reports import survey, triage
from harness.reports.triage import Triage


@pytest.mark.parametrize(
    "target,title,kind",
    [
        ("netdevsim", "WARNING: refcount_t: addition on 0; use-after-free. in refcount_warn_saturate", Triage.NEW),
        ("harness_noowner", "general protection fault in strlen", Triage.CONTROL),
        ("leaky", "out of memory: harness_leaky invoked oom-killer", Triage.CONTROL),
    ],
)
def test_a_splat_looked_at_before_gets_its_row(target, title, kind):
    row = triage.triage(target, title)
    assert row is not None and row.kind is kind


def test_a_row_wants_both_its_target_and_its_title():
    assert triage.triage("netdevsim", "BUG: KASAN: slab-use-after-free in nsim_dev_trap_report") is None
    assert triage.triage("dummy", "WARNING: refcount_t: addition on 0; use-after-free.") is None
    assert triage.line("dummy", "BUG: kernel NULL pointer dereference").startswith("not yet triaged")


def test_every_row_says_what_it_is_and_why():
    for row in triage.ROWS:
        assert row.note and row.target and row.title
        if row.kind in (Triage.KNOWN, Triage.HARNESS):
            assert any(ch.isdigit() for ch in row.note), f"{row.note}: name the fix's commit"


def test_the_survey_lists_each_splat_with_its_triage(tmp_path):
    rep = RaceReport(kernel="6.12.118", kernel_spec="6.12-debug", accel="tcg", seed=1, duration_s=10,
                     rcu_expedited=False, knobs=Knobs(), reload="modprobe")  # fmt: skip
    title = "WARNING: refcount_t: addition on 0; use-after-free. in refcount_warn_saturate"
    splat = Splat.from_lines(SplatKind("warning"), title, ["[  1.0] " + title])
    runs = [
        replace(RunResult("netdevsim", "open:/x", target=TargetInfo("netdevsim", ("open",))),
                verdict=Verdict.WARNED, splats=[splat]),
        replace(RunResult("dummy", "open:/y", target=TargetInfo("dummy", ("open",))),
                verdict=Verdict.CRASHED, splats=[replace(splat, title="BUG: unable to handle page fault")]),
    ]  # fmt: skip
    survey.write(survey.Survey([replace(rep, runs=runs)]), tmp_path, "today", page=False)
    md = (tmp_path / "survey.md").read_text()
    assert "netdevsim on 6.12-debug" in md and "— not yet known upstream: nsim_bus_exit()" in md
    assert "- dummy on 6.12-debug: BUG: unable to handle page fault" in md
    assert "not yet triaged (add a row to harness/reports/triage.py)" in md
