"""The reproducer folder of a run: what repro.sh does, in order, and the
refusals of what cannot be exported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.race.outcomes import RaceReport, Replay, reports_from_json
from harness.reports import repro

OLD = Path(__file__).resolve().parents[1] / "data" / "reports-before-one-engine.json"


def _report(tmp_path, replay: Replay | None) -> RaceReport:
    report = reports_from_json(json.loads(OLD.read_text()))[0]
    for run in report.runs:
        run.replay = replay
    return report


def _replay(tmp_path) -> Replay:
    ko = tmp_path / "m.ko"
    ko.write_bytes(b"\x7fELF")
    return Replay(
        release="6.1.0-99-fake",
        modules=(str(ko),),
        files=(("/etc/modprobe.d/harness.conf", "options m x=1\n"),),
        setup=("mkdir -p /mnt/a", "/sbin/modprobe m"),
        roles=("/bin/racer unloader --name m --seed 3", "/bin/racer caller --name m --seed 3 --op open -- /dev/m"),
        barrier="/dev/shm/b",
    )


def test_the_script_installs_sets_up_and_starts_the_roles_together_in_that_order(tmp_path):
    report = _report(tmp_path, _replay(tmp_path))
    script = repro.export(report, repro.pick_run(report, 1), tmp_path / "out", Path(sys.executable)).read_text()
    order = [
        'if [ "$(uname -r)" != "$release" ]',
        'cp "$here/racer" /bin/racer',
        'cp "$here"/modules/*.ko "/lib/modules/$release/extra/"',
        "depmod -a",
        'cp "$here/files/0" /etc/modprobe.d/harness.conf',
        "/sbin/modprobe m",
        "rm -f /dev/shm/b",
        '/bin/racer unloader --name m --seed 3 >"$out/role0.json"',
        '/bin/racer caller --name m --seed 3 --op open -- /dev/m >"$out/role1.json"',
        "while alive",
    ]
    at = [script.index(s) for s in order]
    assert at == sorted(at), "each step in its place"
    assert (tmp_path / "out" / "files" / "0").read_text() == "options m x=1\n"
    assert (tmp_path / "out" / "modules" / "m.ko").is_file() and (tmp_path / "out" / "racer").is_file()
    assert subprocess.run(["sh", "-n", str(tmp_path / "out" / "repro.sh")]).returncode == 0, "valid sh"
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "6.1.0-99-fake" in readme and report.runs[0].repro in readme


def test_it_refuses_on_another_kernel(tmp_path):
    report = _report(tmp_path, _replay(tmp_path))
    script = repro.export(report, report.runs[0], tmp_path / "out", Path(sys.executable))
    proc = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert proc.returncode == 2 and "needs kernel 6.1.0-99-fake" in proc.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("no replay", "has no replay"),
        ("module gone", "is gone from the cache"),
        ("folder not empty", "is not an empty folder"),
        ("run out of range", "the report has runs 1.."),
    ],
)
def test_what_cannot_be_exported_is_one_line(tmp_path, case, message):
    replay = _replay(tmp_path)
    out = tmp_path / "out"
    if case == "module gone":
        Path(replay.modules[0]).unlink()
    if case == "folder not empty":
        out.mkdir()
        (out / "x").write_text("")
    report = _report(tmp_path, None if case == "no replay" else replay)
    with pytest.raises(HarnessError, match=message) as err:
        run = repro.pick_run(report, 99 if case == "run out of range" else None)
        repro.export(report, run, out, Path(sys.executable))
    assert "\n" not in str(err.value)


def test_the_cli_refuses_a_missing_report_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "export", str(tmp_path / "nosuch.json"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "nosuch.json" in errors[0], proc.stderr
