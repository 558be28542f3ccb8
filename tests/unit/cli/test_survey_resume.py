"""A survey stopped half-way (Ctrl-C, a cancelled CI job) keeps what it did in
survey.json, names the target it was racing, and `--resume` goes on from
there with the same seed.  The races are faked: this is the survey's
bookkeeping, not a guest."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from harness import cli
from harness.cli import race as cli_race
from harness.exitcodes import ExitStatus
from harness.race.kbuild import Knobs
from harness.race.outcomes import RaceReport, RunResult, TargetInfo
from harness.reports import survey

TARGETS = ["vfat", "ext4", "brd", "dummy"]


def _report(kernel: str, name: str, seed: int) -> RaceReport:
    rep = RaceReport(kernel=f"{kernel}-release", kernel_spec=kernel, accel="tcg", seed=seed, duration_s=1,
                     rcu_expedited=False, knobs=Knobs(), reload="modprobe")  # fmt: skip
    return replace(rep, runs=[RunResult(name, "open:/dev/x", target=TargetInfo(name, ("open",)))])


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Races that record what they were asked, and stop (as Ctrl-C does) at `stop_at`."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    state = SimpleNamespace(raced=[], stop_at=None, look=lambda: None)
    monkeypatch.setattr(
        cli_race.kernels, "fetch", lambda spec, quiet=True: SimpleNamespace(name=spec.name, modules_dir=tmp_path)
    )

    def race(spec):
        state.look()  # what the survey has written before this race
        if spec.target == state.stop_at:
            raise KeyboardInterrupt
        state.raced.append((spec.target, spec.seed))
        return _report(spec.kernel.name, spec.target, spec.seed), None

    monkeypatch.setattr(cli_race, "race", race)
    return state


def test_a_survey_between_checkpoints_writes_only_at_its_end(fake, tmp_path):
    out = tmp_path / "survey"
    seen = []
    fake.look = lambda: seen.append((out / "survey.json").exists())
    assert _survey(out) == ExitStatus.OK
    assert seen == [False] * 4 and (out / "survey.json").is_file()


def _survey(out, *more):
    return cli.main(["survey", "--kernel", "6.1", "--target", ",".join(TARGETS), "--out", str(out), *more])


def test_a_stopped_survey_keeps_its_races_and_resume_does_the_rest(fake, tmp_path):
    out = tmp_path / "survey"
    fake.stop_at = "brd"
    assert _survey(out, "--seed", "7") == ExitStatus.INTERRUPTED
    doc = json.loads((out / "survey.json").read_text())
    assert [r["runs"][0]["scheme"] for r in doc["reports"]] == ["vfat", "ext4"]
    assert doc["interrupted"] == ["brd on 6.1"]
    assert "Stopped while racing brd on 6.1" in (out / "survey.md").read_text()
    assert not (out / "index.html").exists(), "no page when stopped: a cancelled job has no time for it"

    fake.stop_at, fake.raced = None, []
    assert _survey(out, "--resume") == ExitStatus.OK
    assert fake.raced == [("brd", 7), ("dummy", 7)], "only what was left, with the stopped survey's seed"
    doc = json.loads((out / "survey.json").read_text())
    assert sorted(r["runs"][0]["scheme"] for r in doc["reports"]) == sorted(TARGETS)
    assert doc["interrupted"] == []
    assert (out / "index.html").is_file()


def test_survey_json_is_written_after_every_target_when_checkpoints_are_due(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(survey, "CHECKPOINT_S", 0.0)
    out = tmp_path / "survey"
    seen = []

    def look():
        doc = json.loads((out / "survey.json").read_text()) if (out / "survey.json").exists() else {"reports": []}
        seen.append(len(doc["reports"]))

    fake.look = look
    assert _survey(out) == ExitStatus.OK
    assert seen == [0, 1, 2, 3]


def test_resume_without_a_survey_is_one_line_exit_2(tmp_path, capsys, fake):
    assert _survey(tmp_path / "none", "--resume") == ExitStatus.BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --resume: no survey to go on from in {tmp_path / 'none'} (no survey.json)"]


def test_the_survey_says_its_pace(fake, tmp_path):
    out = tmp_path / "survey"
    assert _survey(out) == ExitStatus.OK
    doc = json.loads((out / "survey.json").read_text())
    assert sorted(doc["seconds"]) == sorted(f"{t} on 6.1" for t in TARGETS)
    assert all(s >= 0 for s in doc["seconds"].values())
    assert "4 targets raced in " in (out / "survey.md").read_text()
