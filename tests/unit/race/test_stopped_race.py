"""A race stopped by Ctrl-C or SIGTERM (a cancelled CI job) keeps the runs it
finished: its JSON report is written with them and names the run that was
under way.  Without QEMU (fakeguest)."""

from __future__ import annotations

import json

import pytest

from fakeguest import Behaviour, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness import cli
from harness.cli import race as race_cli
from harness.race import engine
from harness.race.outcomes import RaceReport


@pytest.fixture
def stop_at_run(monkeypatch):
    """run_plan raises KeyboardInterrupt (as SIGINT does) at the n-th run."""
    real, plans = engine.run_plan, []

    def stop(n):
        def run_plan(vm, spec, plan, *rest):
            plans.append(plan)
            if len(plans) == n:
                raise KeyboardInterrupt
            return real(vm, spec, plan, *rest)

        monkeypatch.setattr(engine, "run_plan", run_plan)

    return stop


def _args(tmp_path, *more):
    return cli.parser().parse_args(["race", "--scheme", "refcount", "--duration", "0.2", *more])


def test_a_stopped_race_writes_the_runs_done_and_names_the_one_under_way(tmp_path, monkeypatch, stop_at_run):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    stop_at_run(2)
    jfile = tmp_path / "r.json"
    args = _args(tmp_path, "--workload", "lookup,mount", "--json", str(jfile))
    with pytest.raises(KeyboardInterrupt):
        race_cli.cmd_race(args, stages=lambda spec: FakeStages({"refcount": Behaviour()}))
    doc = json.loads(jfile.read_text())
    assert [(r["scheme"], r["workload"]) for r in doc["runs"]] == [("refcount", "lookup")]
    assert doc["interrupted"] == "refcount/mount"
    assert RaceReport.from_json(doc).interrupted == "refcount/mount"
    (own,) = (tmp_path / "build" / "reports").glob("race-*/report.json")
    assert json.loads(own.read_text()) == doc


def test_a_race_that_ends_is_not_marked_stopped(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    jfile = tmp_path / "r.json"
    race_cli.cmd_race(_args(tmp_path, "--json", str(jfile)), stages=lambda spec: FakeStages({"refcount": Behaviour()}))
    assert json.loads(jfile.read_text())["interrupted"] == ""


def test_the_page_of_a_stopped_race_says_so(tmp_path, monkeypatch, stop_at_run):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    stop_at_run(2)
    jfile = tmp_path / "r.json"
    with pytest.raises(KeyboardInterrupt):
        race_cli.cmd_race(
            _args(tmp_path, "--workload", "lookup,mount", "--json", str(jfile)),
            stages=lambda spec: FakeStages({"refcount": Behaviour()}),
        )
    assert cli.main(["race-page", str(jfile), str(tmp_path / "page.html")]) == 0
    assert "Stopped (Ctrl-C or SIGTERM) during refcount/mount" in (tmp_path / "page.html").read_text()
