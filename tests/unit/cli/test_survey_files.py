"""A survey keeps each race's events on disk, not in memory: its full report
and page in races/ as the race ends, and survey.json without them.  The ops
derived for modules without a row are kept in survey.json as they are found,
so a resumed survey does not derive them again.  Races and discovery are
faked: this is the survey's bookkeeping, not a guest."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import pytest
from test_survey_resume import _report

from harness import cli
from harness.cli import race as cli_race
from harness.exitcodes import ExitStatus
from harness.race import discover
from harness.race.racer import OpStats
from harness.race.targets import Kind
from harness.race.timeline import Timeline
from harness.reports import survey

MODULES = ["moda", "modb", "modc"]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    state = SimpleNamespace(raced=[], derived=[], stop_at=None, load_hardware=None)
    monkeypatch.setattr(
        cli_race.kernels, "fetch", lambda spec, quiet=True: SimpleNamespace(name=spec.name, modules_dir=tmp_path)
    )

    def race(spec):
        if spec.target == state.stop_at:
            raise KeyboardInterrupt
        state.raced.append((spec.target, spec.row.ops if spec.row else None))
        rep = _report(spec.kernel.name, spec.target, spec.seed)
        opened = OpStats(3, 3, hist=((1000, 3),))
        run = replace(rep.runs[0], timeline=Timeline(windows_total=7, origin_s=1.5), ops={"open": opened})
        return replace(rep, runs=[run]), None

    def run(kfiles, names, accel="auto", each=None, load_hardware=False):
        state.load_hardware = load_hardware
        found = []
        for name in names:
            state.derived.append(name)
            entry = discover.Entry(f"open:/dev/{name}", "alias", Kind.CHAR, reached=name != "modc", errno="ENODEV")
            d = discover.Discovery(name, (entry,), why_none=None if entry.reached else discover.NoOps.UNREACHED)
            found.append(d)
            if each:
                each(d)
        return found

    monkeypatch.setattr(cli_race, "race", race)
    monkeypatch.setattr(discover, "run", run)
    return state


def _survey(out, *more):
    return cli.main(["survey", "--kernel", "6.1", "--target", ",".join(MODULES), "--out", str(out), *more])


def test_each_race_has_its_report_and_page_on_disk_and_survey_json_holds_no_events(fake, tmp_path):
    out = tmp_path / "survey"
    assert _survey(out) == ExitStatus.FINDINGS  # modc: not raced
    doc = json.loads((out / "survey.json").read_text())
    assert [r["runs"][0]["events"] for r in doc["reports"]] == [None, None]
    assert [r["runs"][0]["ops"]["open"]["hist"] for r in doc["reports"]] == [[], []], "no histograms either"
    assert doc["files"] == {f"{m} on 6.1": [f"races/6.1/{m}.json", f"races/6.1/{m}.html"] for m in ("moda", "modb")}
    one = json.loads((out / "races/6.1/moda.json").read_text())
    assert one["runs"][0]["events"]["unloads"]["total"] == 7, "the race's own report keeps its events"
    assert one["runs"][0]["ops"]["open"]["hist"] == [[1000, 3]]
    assert (out / "races/6.1/moda.html").is_file()
    assert 'href="races/6.1/modb.html"' in (out / "index.html").read_text()


def test_a_resumed_survey_keeps_the_ops_it_derived(fake, tmp_path):
    out = tmp_path / "survey"
    fake.stop_at = "modb"
    assert _survey(out) == ExitStatus.INTERRUPTED
    assert fake.derived == MODULES
    doc = json.loads((out / "survey.json").read_text())
    assert doc["derived"]["6.1"]["moda"]["row"]["ops"] == ["open:/dev/moda"]
    assert doc["derived"]["6.1"]["modc"]["why"].startswith("no op reaches it (no derived op reached it)")

    fake.stop_at, fake.derived, fake.raced = None, [], []
    assert _survey(out, "--resume") == ExitStatus.FINDINGS
    assert fake.derived == [], "nothing derived again"
    assert fake.raced == [("modb", ("open:/dev/modb",))]
    doc = json.loads((out / "survey.json").read_text())
    assert [n["target"] for n in doc["not_raced"]] == ["modc"]


def test_a_stop_while_deriving_keeps_what_was_derived(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(survey, "CHECKPOINT_S", 0.0)
    out = tmp_path / "survey"
    real = discover.run

    def stopping(kfiles, names, accel="auto", each=None, load_hardware=False):
        def one(d):
            if d.module == "modb":
                raise KeyboardInterrupt
            each(d)

        return real(kfiles, names, accel, one)

    monkeypatch.setattr(discover, "run", stopping)
    assert _survey(out) == ExitStatus.INTERRUPTED
    doc = json.loads((out / "survey.json").read_text())
    assert list(doc["derived"]["6.1"]) == ["moda"]
    assert doc["interrupted"] == ["the ops of 3 modules on 6.1"]

    monkeypatch.setattr(discover, "run", real)
    fake.derived = []
    _survey(out, "--resume")
    assert fake.derived == ["modb", "modc"]


def test_a_merged_survey_holds_its_shards_races_and_stands_alone(fake, tmp_path):
    a, b, merged = tmp_path / "a", tmp_path / "b", tmp_path / "m"
    assert cli.main(["survey", "--kernel", "6.1", "--target", "moda", "--out", str(a)]) == ExitStatus.OK
    assert cli.main(["survey", "--kernel", "6.1", "--target", "modb", "--out", str(b)]) == ExitStatus.OK
    assert cli.main(["survey-merge", str(a), str(b), "--out", str(merged)]) == ExitStatus.OK
    doc = json.loads((merged / "survey.json").read_text())
    assert doc["files"]["modb on 6.1"] == ["races/6.1/modb.json", "races/6.1/modb.html"]
    assert 'href="races/6.1/moda.html"' in (merged / "index.html").read_text()
    assert json.loads((merged / "races/6.1/moda.json").read_text())["runs"][0]["events"]["unloads"]["total"] == 7
    assert sorted(doc["derived"]["6.1"]) == ["moda", "modb"]
    # A merge of the merge (its files already in place) changes nothing.
    assert cli.main(["survey-merge", str(merged), "--out", str(merged)]) == ExitStatus.OK
    assert json.loads((merged / "survey.json").read_text())["files"] == doc["files"]


def test_a_bad_derived_row_is_not_a_survey(tmp_path):
    path = tmp_path / "survey.json"
    path.write_text(json.dumps({**survey.Survey().to_json(), "derived": {"6.1": {"m": {"row": {"kind": "x"}}}}}))
    with pytest.raises(cli_race.HarnessError, match="not a survey's JSON"):
        survey.Survey.load(path)


def test_kind_races_only_targets_of_those_kinds(fake, tmp_path, capsys):
    out = tmp_path / "survey"
    targets = "moda,vfat,dummy"  # a derived char target, a file system row, a net row
    assert cli.main(["survey", "--kernel", "6.1", "--target", targets, "--kind", "fs,char", "--out", str(out)]) == 0
    assert [t for t, _ in fake.raced] == ["moda", "vfat"]
    assert "1 targets of other kinds left out (--kind fs,char)" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["", "fs,", "sound"])
def test_a_bad_kind_is_one_line_exit_2(fake, tmp_path, capsys, kind):
    assert cli.main(["survey", "--kernel", "6.1", "--kind", kind, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --kind"), err
    assert fake.raced == []


def test_load_hardware_reaches_discovery(fake, tmp_path):
    assert _survey(tmp_path / "a") == ExitStatus.FINDINGS and fake.load_hardware is False
    assert _survey(tmp_path / "b", "--load-hardware") == ExitStatus.FINDINGS and fake.load_hardware is True
