"""Held callers on a real guest: another project's misc driver whose
file_operations lack .owner (tests/project/ownerless) crashes when a file
opened before its unload is read and closed after it, which only the held
callers `race --target` starts by default do; the same driver with
`.owner = THIS_MODULE` races clean, and with holding off the owner-less one
is missed (clean), which shows that the test guards the hold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.tools import REPO

OWNERLESS = REPO / "tests" / "project" / "ownerless"
OP = "open:/dev/ownerless:read=16"


def race(kernel_spec, tmp_path: Path, target: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "race",
            "--kernel",
            kernel_spec.name,
            "--target",
            str(target),
            "--op",
            OP,
            "--duration",
            "20",
            "--seed",
            "5",
            "--json",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert out.is_file(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def with_owner(tmp_path: Path) -> Path:
    """The same driver built with `.owner = THIS_MODULE`."""
    src = tmp_path / "owned"
    shutil.copytree(OWNERLESS, src)
    with (src / "Kbuild").open("a") as kbuild:
        kbuild.write("ccflags-y += -DOWNERLESS_OWNER\n")
    return src


def test_a_held_file_of_a_driver_without_owner_crashes_the_release(kernel_spec, tmp_path):
    proc, report = race(kernel_spec, tmp_path, OWNERLESS)
    run = report["runs"][0]
    assert run["verdict"] == "crashed" and run["splats"], (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1
    assert "--no-hold" not in run["repro"] and OP in run["repro"]
    print("splat:", run["splats"][0], "console:", run.get("console_log"))


def test_the_same_driver_with_an_owner_races_clean(kernel_spec, tmp_path):
    proc, report = race(kernel_spec, tmp_path, with_owner(tmp_path))
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1
    assert [r["ok_live"] > 0 for r in run["reach"]] == [True, True], run["reach"]


def test_without_holding_the_driver_without_owner_is_missed(kernel_spec, tmp_path):
    proc, report = race(kernel_spec, tmp_path, OWNERLESS, "--no-hold")
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1 and len(run["reach"]) == 1 and run["reach"][0]["ok_live"] > 0
    assert "--no-hold" in run["repro"]
