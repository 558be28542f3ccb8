"""Held callers on a real guest: another project's misc driver whose
file_operations lack .owner (tests/project/ownerless) crashes when a file
opened before its unload is read and closed after it, which only the held
callers `race --target` starts by default do; the same driver with
`.owner = THIS_MODULE` races clean, and with holding off the owner-less one
is missed (clean), which shows that the test guards the hold."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.tools import REPO, race_cli

OWNERLESS = REPO / "tests" / "project" / "ownerless"
OP = "open:/dev/ownerless:read=16"


def race(kernel_spec, tmp_path: Path, target: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc, report = race_cli(
        kernel_spec.name, tmp_path, "--target", str(target), "--op", OP, "--duration", "20", "--seed", "5", *args
    )
    assert report is not None, proc.stderr[-3000:]
    return proc, report


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
