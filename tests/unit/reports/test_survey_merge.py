"""Surveys of shards (survey --shard I/N) merged into one: the union of
their rows per kernel, none twice."""

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


def _survey(kernel: str, names: list[str]) -> list[RaceReport]:
    rep = RaceReport(kernel=f"{kernel}-release", kernel_spec=kernel, accel="tcg", seed=1, duration_s=10,
                     rcu_expedited=False, knobs={}, reload="modprobe")  # fmt: skip
    return [replace(rep, runs=[RunResult(n, f"open:/dev/{n}", target=TargetInfo(n, ("open",))) for n in names])]


def test_the_shards_of_a_survey_merge_into_the_whole_survey():
    parts = [_survey("6.1", shard(MODULES, (i, 4))) + _survey("6.12", shard(MODULES, (i, 4))) for i in (1, 2, 3, 4)]
    merged = survey.merge(parts)
    assert [r.kernel_spec for r in merged] == ["6.1", "6.12"]
    for rep in merged:
        assert sorted(r.scheme for r in rep.runs) == MODULES, "the union, each once"
    md = survey.table(merged, "today")
    assert all(md.count(f"| {m} |") == 1 for m in MODULES)


def test_a_target_in_two_shards_is_refused_in_one_line():
    with pytest.raises(HarnessError, match="mod01 on 6.1 is in survey 1 and survey 2") as err:
        survey.merge([_survey("6.1", ["mod00", "mod01"]), _survey("6.1", ["mod01", "mod02"])])
    assert "\n" not in str(err.value)


def test_the_cli_writes_the_merged_table(tmp_path):
    for i in (1, 2):
        part = tmp_path / f"part{i}"
        part.mkdir()
        part.joinpath("survey.json").write_text(
            json.dumps([r.to_json() for r in _survey("6.1", shard(MODULES, (i, 2)))])
        )
    out = tmp_path / "merged"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "survey-merge", str(tmp_path / "part1"), str(tmp_path / "part2"),
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "survey.json").read_text())
    assert sorted(r["scheme"] for r in doc[0]["runs"]) == MODULES
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "survey-merge", str(tmp_path / "part1"), str(tmp_path / "part1"),
         "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "in survey 1 and survey 2" in errors[0]
