"""KCIDB and KTAP from fake race reports and pytest records (no VM), checked
by kcidb-io's own validator and an independent TAP parser (tap.py)."""

from __future__ import annotations

import json

import pytest

import htmlsim
from fakeguest import OOPS, WARNING, Behaviour, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness.race import engine as race
from harness.race import kinds
from harness.race.outcomes import Control, RaceReport, Verdict, problem
from harness.reports import kcidb, ktap
from harness.reports.status import KTAP_RESULT, STATUS, run_status

kcidb_io = pytest.importorskip("kcidb_io")
tap_parser = pytest.importorskip("tap.parser")


def engine_report() -> RaceReport:
    spec = race.RaceSpec(schemes=("refcount", "unsafe", "rwsem"), workloads=("lookup", "mount"), duration_s=0.2, seed=3)
    stages = FakeStages(
        {
            "refcount": Behaviour(console=WARNING, lookups=(100, 90)),
            "unsafe": Behaviour(console=OOPS, killed_roles=("looker",)),
            "rwsem": Behaviour(boot_console=WARNING, debug_locks=(1, 0)),
        },
        lockdep=True,
        kasan=True,
    )
    report, _ = kinds.race(spec, stages=stages)
    report.kernel_describe = "Debian 6.1.192-3"
    return report


def test_every_verdict_and_pytest_outcome_has_a_status():
    for v in Verdict:
        assert STATUS[v] in KTAP_RESULT
    for o in ("passed", "failed", "error", "skipped", ""):
        assert STATUS[o] in KTAP_RESULT
    assert STATUS[Control.MISSED] == "ERROR"


def test_race_submission_validates_with_kcidb_io(tmp_path):
    reports = [engine_report(), htmlsim.report()]
    doc = kcidb.race_submission(reports, origin="my_ci", log_url="https://ci.example/logs/")
    kcidb_io.schema.LATEST.validate(doc)
    assert doc["version"] == {"major": kcidb_io.schema.LATEST.major, "minor": kcidb_io.schema.LATEST.minor}
    runs = [r for rep in reports for r in rep.runs]
    assert len(doc["tests"]) == len(runs) and len(doc["builds"]) == len({r.kernel_spec for r in reports})
    assert all(t["id"].startswith("my_ci:") and t["origin"] == "my_ci" for t in doc["tests"])
    by_path = {t["path"]: t for t in doc["tests"][: len(reports[0].runs)]}
    assert by_path["harness.race.refcount.lookup"]["status"] == "FAIL"  # a safe scheme warned
    assert by_path["harness.race.rwsem.lookup"]["status"] == "MISS"  # broken guest
    assert by_path["harness.race.unsafe.lookup"]["status"] == "PASS"  # the negative control crashed
    for t, r in zip(doc["tests"], runs):
        assert t["status"] == run_status(r)
        assert t["misc"]["calls"]["ok"] == r.callers.ok and t["misc"]["unloads"] == r.unloads
        if r.console_log:
            assert t["output_files"][0]["url"].startswith("https://ci.example/logs/")
    build = doc["builds"][0]
    assert build["misc"]["lockdep"] is reports[0].lockdep and build["config_name"].startswith("config-")
    assert doc["checkouts"][0]["comment"] == "Debian 6.1.192-3"
    path = tmp_path / "k.json"
    kcidb.write(doc, path)
    kcidb_io.schema.LATEST.validate(json.loads(path.read_text()))


def test_file_urls_by_default_and_a_bad_origin_is_refused():
    rep = engine_report()
    doc = kcidb.race_submission([rep])
    assert all(f["url"].startswith("file:///") for t in doc["tests"] for f in t.get("output_files", []))
    with pytest.raises(Exception, match="lower-case"):
        kcidb.race_submission([rep], origin="My-CI")


def test_pytest_records_make_a_valid_submission():
    recs = [
        {
            "nodeid": "tests/claims/test_claim1_refcount.py::test_claim1_refcount[6.1]",
            "when": "setup",
            "outcome": "passed",
            "duration": 0.1,
            "user_properties": [],
            "longrepr": "",
        },
        {
            "nodeid": "tests/claims/test_claim1_refcount.py::test_claim1_refcount[6.1]",
            "when": "call",
            "outcome": "passed",
            "duration": 30.5,
            "user_properties": [
                ["kernel", "6.1"],
                ["kernel_release", "6.1.0-57-amd64"],
                ["kernel_describe", "Debian 6.1.192-3"],
                ["kernel_config", {"config_name": "config-6.1.0-57-amd64", "lockdep": False}],
                ["measured", {"spurious": 12, "ratio": None}],
                ["console_logs", ["/tmp/a.log"]],
            ],
            "longrepr": "",
        },
        {
            "nodeid": "tests/claims/test_claim4_x.py::test_claim4_x[rwsem-6.1]",
            "when": "setup",
            "outcome": "failed",
            "duration": 0.1,
            "user_properties": [["kernel", "6.1"]],
            "longrepr": "boom",
        },
        {
            "nodeid": "tests/claims/test_loader_y.py::test_loader_y[6.1]",
            "when": "setup",
            "outcome": "skipped",
            "duration": 0.0,
            "user_properties": [["kernel", "6.1"], ["kind", "fact"]],
            "longrepr": "no",
        },
    ]
    doc = kcidb.pytest_submission(recs, known_kernels=("6.1",))
    kcidb_io.schema.LATEST.validate(doc)
    got = {t["path"]: t["status"] for t in doc["tests"]}
    assert got == {
        "harness.claims.claim1_refcount": "PASS",
        "harness.claims.claim4_x.rwsem": "ERROR",
        "harness.claims.loader_y": "SKIP",
    }
    assert len(doc["builds"]) == 1 and doc["builds"][0]["misc"]["release"] == "6.1.0-57-amd64"
    t1 = doc["tests"][0]
    assert t1["misc"]["measured"]["spurious"] == 12 and t1["output_files"][0]["name"] == "a.log"


def test_ktap_parses_with_tap_py_and_its_counts_match_the_report(tmp_path):
    reports = [engine_report(), htmlsim.report()]
    text = ktap.render(reports)
    lines = text.splitlines()
    assert lines[0] == "KTAP version 1" and lines[1] == f"1..{sum(len(r.runs) for r in reports)}"
    assert "  KTAP version 1" in lines
    path = tmp_path / "r.ktap"
    ktap.write(reports, path)
    counts = ktap_counts(path)
    runs = [r for rep in reports for r in rep.runs]
    assert counts["plan"] == len(runs) == counts["ok"] + counts["not_ok"]
    assert counts["not_ok"] == sum(1 for r in runs if problem(r))
    assert counts["skip"] == sum(1 for r in runs if KTAP_RESULT[run_status(r)][1] == "SKIP")


def ktap_counts(path) -> dict[str, int]:
    """Top-level counts as tap.py's parser reads them (it skips the indented subtests)."""
    out = {"plan": 0, "ok": 0, "not_ok": 0, "skip": 0}
    for line in tap_parser.Parser().parse_file(str(path)):
        if line.category == "plan":
            out["plan"] = line.expected_tests
        elif line.category == "test":
            out["ok" if line.ok else "not_ok"] += 1
            out["skip"] += bool(line.skip)
    return out


def test_race_command_writes_kcidb_and_ktap_beside_its_json(tmp_path, monkeypatch, capsys):
    from harness import cli
    from harness.cli import race as race_cli
    from harness.exitcodes import ExitStatus

    monkeypatch.setattr(race, "HANG_SLACK_S", 0.5)
    monkeypatch.setattr(race, "CONSOLE_SETTLE_S", 0.0)
    monkeypatch.setattr(race, "POLL_S", 0.01)
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    kfile, tfile, jfile = tmp_path / "k.json", tmp_path / "r.ktap", tmp_path / "r.json"
    args = cli.parser().parse_args(
        [
            "race",
            "--scheme",
            "refcount,unsafe",
            "--workload",
            "lookup",
            "--duration",
            "0.2",
            "--json",
            str(jfile),
            "--kcidb",
            str(kfile),
            "--kcidb-origin",
            "lab_1",
            "--ktap",
            str(tfile),
        ]
    )
    stages = FakeStages({"unsafe": Behaviour(console=OOPS, killed_roles=("looker",))})
    assert race_cli.cmd_race(args, stages=lambda spec: stages) == ExitStatus.OK
    doc = json.loads(kfile.read_text())
    kcidb_io.schema.LATEST.validate(doc)
    assert [(t["path"], t["status"]) for t in doc["tests"]] == [
        ("harness.race.refcount.lookup", "PASS"),
        ("harness.race.unsafe.lookup", "PASS"),
    ]
    assert doc["tests"][0]["origin"] == "lab_1"
    report = json.loads(jfile.read_text())
    counts = ktap_counts(tfile)
    assert counts == {
        "plan": len(report["runs"]),
        "ok": len(report["runs"]) - len(report["problems"]),
        "not_ok": len(report["problems"]),
        "skip": 0,
    }
    err = capsys.readouterr().err
    assert f"kcidb: {kfile}" in err and f"ktap: {tfile}" in err


PLAIN_TESTS = """
import pytest

def test_claim9_holds(record_property):
    record_property("kernel", "6.1")
    record_property("kernel_release", "6.1.0-57-amd64")
    record_property("measured", {"spurious": 3, "calls": 100})

def test_claim10_fails(record_property):
    record_property("kernel", "6.1")
    assert 1 == 2

@pytest.mark.skip(reason="not here")
def test_fact_skipped():
    pass
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["in-process", "xdist"])
def test_pytest_plugin_writes_kcidb_and_junit_properties(tmp_path, workers):
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    (tmp_path / "claims").mkdir()
    (tmp_path / "claims" / "test_plain.py").write_text(PLAIN_TESTS)
    out, junit = tmp_path / "k.json", tmp_path / "j.xml"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "claims",
            "--kcidb",
            str(out),
            "--kcidb-origin",
            "lab",
            f"--junitxml={junit}",
            *workers,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(out.read_text())
    kcidb_io.schema.LATEST.validate(doc)
    assert {t["path"]: t["status"] for t in doc["tests"]} == {
        "harness.claims.claim9_holds": "PASS",
        "harness.claims.claim10_fails": "FAIL",
        "harness.claims.fact_skipped": "SKIP",
    }
    by_path = {t["path"]: t for t in doc["tests"]}  # xdist: in the order they ended
    assert by_path["harness.claims.claim9_holds"]["misc"]["measured"] == {"spurious": 3, "calls": 100}
    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["kernel"] == "6.1" and props["kernel_release"] == "6.1.0-57-amd64"
    assert json.loads(props["measured"]) == {"spurious": 3, "calls": 100}  # JSON, not Python text


def test_pytest_plugin_refuses_a_bad_kcidb_path_at_once(tmp_path):
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    (tmp_path / "a-file").write_text("")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py", "--kcidb", "a-file/k.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 4 and "--kcidb a-file/k.json: cannot make its folder" in res.stderr
    assert res.stderr.count("\n") <= 2, res.stderr  # one line, no traceback


def test_pytest_plugin_makes_the_kcidb_folder(tmp_path):
    """As --junitxml does: make matrix on a clean clone names build/matrix/kcidb.json
    before build/matrix exists (found by make nightly-check)."""
    import subprocess
    import sys

    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_x.py", "--kcidb", "build/matrix/k.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    kcidb_io.schema.LATEST.validate(json.loads((tmp_path / "build" / "matrix" / "k.json").read_text()))


def test_survey_writes_kcidb_and_ktap_with_target_paths(tmp_path, monkeypatch):
    from harness import cli
    from harness.cli import race as race_cli
    from harness.race.outcomes import TargetInfo

    def fake_race(spec, **_):
        rep = htmlsim.report()
        rep.runs = rep.runs[:1]
        rep.runs[0].scheme, rep.runs[0].workload = spec.target, "open"
        rep.runs[0].target = TargetInfo(module=spec.target, caller_ops=("open",))
        return rep, None

    monkeypatch.setattr(race_cli, "race", fake_race)
    kfile, tfile = tmp_path / "k.json", tmp_path / "s.ktap"
    code = cli.main(
        [
            "survey",
            "--kernel",
            "6.1",
            "--target",
            "vfat,ext4",
            "--out",
            str(tmp_path / "survey"),
            "--kcidb",
            str(kfile),
            "--ktap",
            str(tfile),
        ]
    )
    doc = json.loads(kfile.read_text())
    kcidb_io.schema.LATEST.validate(doc)
    assert [t["path"] for t in doc["tests"]] == ["harness.target.vfat.open", "harness.target.ext4.open"]
    counts = ktap_counts(tfile)
    assert counts["plan"] == 2 == counts["ok"] + counts["not_ok"]
    assert code == (1 if counts["not_ok"] else 0)
