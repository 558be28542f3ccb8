"""Surveys of shards (survey --shard I/N) merged into one: the union of
their rows and of their targets not raced, per kernel, none twice."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from harness.errors import HarnessError
from harness.race.discover import shard
from harness.race.outcomes import RaceReport, RunResult, TargetInfo
from harness.reports import survey

MODULES = [f"mod{i:02}" for i in range(10)]


def _reports(kernel: str, names: list[str]) -> list[RaceReport]:
    rep = RaceReport(kernel=f"{kernel}-release", kernel_spec=kernel, accel="tcg", seed=1, duration_s=10,
                     rcu_expedited=False, knobs={}, reload="modprobe")  # fmt: skip
    return [replace(rep, runs=[RunResult(n, f"open:/dev/{n}", target=TargetInfo(n, ("open",))) for n in names])]


def _survey(kernel: str, names: list[str], not_raced: tuple[str, ...] = ()) -> survey.Survey:
    return survey.Survey(_reports(kernel, names), [survey.NotRaced(kernel, n, "needs hardware") for n in not_raced])


def test_the_shards_of_a_survey_merge_into_the_whole_survey():
    parts = [
        survey.Survey(_reports("6.1", shard(MODULES, (i, 4))) + _reports("6.12", shard(MODULES, (i, 4))))
        for i in (1, 2, 3, 4)
    ]
    merged = survey.merge(parts)
    assert [r.kernel_spec for r in merged.reports] == ["6.1", "6.12"]
    for rep in merged.reports:
        assert sorted(r.scheme for r in rep.runs) == MODULES, "the union, each once"
    md = survey.table(merged.reports, "today")
    assert all(md.count(f"| {m} |") == 1 for m in MODULES)


def test_a_target_in_two_shards_is_refused_in_one_line():
    with pytest.raises(HarnessError, match="mod01 on 6.1 is in survey 1 and survey 2") as err:
        survey.merge([_survey("6.1", ["mod00", "mod01"]), _survey("6.1", ["mod01", "mod02"])])
    assert "\n" not in str(err.value)


def test_the_cli_writes_the_merged_table(tmp_path):
    for i in (1, 2):
        part = tmp_path / f"part{i}"
        part.mkdir()
        raced, refused = shard(MODULES, (i, 2))[:-1], shard(MODULES, (i, 2))[-1:]
        part.joinpath("survey.json").write_text(json.dumps(_survey("6.1", raced, tuple(refused)).to_json()))
    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "survey-merge", str(tmp_path / "part1"), str(tmp_path / "part2"),
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "survey.json").read_text())
    raced = [r["scheme"] for r in doc["reports"][0]["runs"]]
    refused = [n["target"] for n in doc["not_raced"]]
    assert sorted(raced + refused) == MODULES and len(refused) == 2, "the not-raced lines are kept too"
    assert all(f"- {n} on 6.1: needs hardware" in (out / "survey.md").read_text() for n in refused)
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "survey-merge", str(tmp_path / "part1"), str(tmp_path / "part1"),
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "in survey 1 and survey 2" in errors[0]


def test_a_target_not_raced_in_one_shard_and_raced_in_another_is_refused():
    with pytest.raises(HarnessError, match="mod01 on 6.1 is in survey 1 and survey 2"):
        survey.merge([_survey("6.1", ["mod00"], not_raced=("mod01",)), _survey("6.1", ["mod01"])])


def test_a_survey_json_of_before_the_not_raced_lines_still_reads():
    old = [r.to_json() for r in _reports("6.1", ["mod00", "mod01"])]
    state = survey.Survey.from_json(old)
    assert state.done() == {("6.1", "mod00"), ("6.1", "mod01")} and not state.not_raced


def test_a_survey_json_round_trips():
    state = _survey("6.1", ["mod00"], not_raced=("mod01",))
    state.interrupted = ["mod02 on 6.1"]
    again = survey.Survey.from_json(json.loads(json.dumps(state.to_json())))
    assert again.done() == state.done() and again.not_raced == state.not_raced
    assert again.interrupted == ["mod02 on 6.1"]


def test_the_pace_of_merged_shards_counts_every_race_and_both_derivations():
    a, b = _survey("6.1", ["mod00"]), _survey("6.1", ["mod01", "mod02"])
    a.seconds, a.discover_seconds = {"mod00 on 6.1": 10.0}, {"6.1": 60.0}
    b.seconds, b.discover_seconds = {"mod01 on 6.1": 20.0, "mod02 on 6.1": 30.0}, {"6.1": 60.0}
    merged = survey.merge([a, b])
    assert merged.discover_seconds == {"6.1": 120.0}
    # 3 races, 180 s in all: 60 per hour, median 20 s.
    assert merged.timing() == (
        "3 targets raced in 3 min of wall time (deriving ops 2 min): 60 per hour; per target median 20.0 s (10.0-30.0)."
    )


def test_the_targets_not_raced_are_counted_by_reason(tmp_path):
    state = survey.Survey(_reports("6.1", ["mod00"]), [
        survey.NotRaced("6.1", "e1000", "no op reaches it (needs hardware); tried alias pci:...: failed"),
        survey.NotRaced("6.1", "igb", "no op reaches it (needs hardware)"),
        survey.NotRaced("6.1", "efivarfs", "no op reaches it (cannot load); modprobe: ERROR: ..."),
        survey.NotRaced("6.1", "sctp", "target sctp cannot be unloaded here (rmmod: ERROR: in use)"),
    ])  # fmt: skip
    survey.write(state, tmp_path, "today", page=False)
    md = (tmp_path / "survey.md").read_text()
    assert "| needs hardware | 2 |\n| cannot load | 1 |\n| target sctp cannot be unloaded here | 1 |" in md
    assert md.count("- e1000 on 6.1: no op reaches it (needs hardware)") == 1
