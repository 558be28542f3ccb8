"""Held callers on a real guest: another project's misc driver whose
file_operations lack .owner (tests/project/ownerless) crashes when a file
opened before its unload is read and closed after it, which only the held
callers `race --target` starts by default do; the same driver with
`.owner = THIS_MODULE` races clean, and with holding off the owner-less one
is missed (clean), which shows that the test guards the hold.

One case of each other kind the bug benchmark has (bench/bugs): a file
system type without .owner (a mount held across the unload, then
unmounted), a protocol whose proto and proto_ops lack .owner (a socket held,
then closed) and a hash without .cra_module (a bound AF_ALG socket held):
each crashes with the default held callers, and races clean built with its
owner.  An exec caller's $RACER_HOLD returns at each unload done, and a
shell line that holds the node through it crashes the owner-less driver,
where the same line without it is missed; on the driver with its owner the
held line races clean, each call judged at its hold."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

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


# An exec caller's command holds through $RACER_HOLD (harness/race/ops.py):
# the node opened, kept until the next unload is done, then closed.  Without
# it the shell closes the node microseconds after opening it (both are
# builtins), and the same line is missed: the pair guards the hold.
EXEC_QUICK = "exec:exec 3</dev/ownerless || exit 1; exec 3<&-"
EXEC_HELD = "exec:exec 3</dev/ownerless || exit 1; $RACER_HOLD 3000; exec 3<&-"


def race_exec(kernel_spec, tmp_path: Path, op: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc, report = race_cli(
        kernel_spec.name, tmp_path, "--target", str(OWNERLESS), "--op", op, "--duration", "20", "--seed", "5"
    )
    assert report is not None, proc.stderr[-3000:]
    return proc, report


def test_an_exec_command_holding_through_racer_hold_crashes_the_release(kernel_spec, tmp_path):
    proc, report = race_exec(kernel_spec, tmp_path, EXEC_HELD)
    run = report["runs"][0]
    assert run["verdict"] == "crashed" and run["splats"], (run["problem"], proc.stderr[-3000:])
    print("splat:", run["splats"][0]["title"], "console:", run.get("console_log"))


def test_the_same_exec_command_on_the_driver_with_an_owner_races_clean(kernel_spec, tmp_path):
    """The held node pins the module, so the unloader deletes it only after
    the close; judged at its end no such call would count as one that
    reached the module (`unreached`).  Judged at its hold, they do."""
    proc, report = race_cli(
        kernel_spec.name, tmp_path, "--target", str(with_owner(tmp_path)), "--op", EXEC_HELD, "--duration", "20",
        "--seed", "5",
    )  # fmt: skip
    assert report is not None, proc.stderr[-3000:]
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1 and run["reach"][0]["ok_live"] > 0, run["reach"]


def test_the_same_exec_command_without_racer_hold_is_missed(kernel_spec, tmp_path):
    proc, report = race_exec(kernel_spec, tmp_path, EXEC_QUICK)
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1 and run["reach"][0]["ok_live"] > 0, run["reach"]


def test_racer_hold_in_an_exec_command_returns_at_each_unload(kernel_spec, tmp_path):
    """$RACER_HOLD (harness/race/ops.py) in a real guest: each exec call waits
    for the next unload done, not for its 3 s: about one call per unload,
    each well under 3 s, none failed (unset, the line would fail at once)."""
    proc, report = race_cli(
        kernel_spec.name, tmp_path, "--target", str(OWNERLESS), "--op", "exec:$RACER_HOLD 3000 || exit 1",
        "--duration", "8", "--seed", "5", "--callers", "1", "--no-hold",
    )  # fmt: skip
    assert report is not None, proc.stderr[-3000:]
    run = report["runs"][0]
    calls, unloads = run["ops"]["exec"], run["ops"]["delete_module"]["ok"]
    assert calls["errors"] == {} and calls["ok"] >= 3, calls
    assert calls["total"] <= unloads + 1, (calls["total"], unloads)
    assert calls["latency_us"]["p50"] < 2_000_000, calls["latency_us"]


KINDS = {
    # kind: (module folder, op, extra project-target keys)
    "fs": ("ownerlessfs", "mount:none:ownerlessfs", ""),
    "proto": ("ownerlessproto", "socket:25:dgram:0", ""),
    # AF_ALG's family (algif_hash) is a module the guest needs besides the target.
    "crypto": ("ownerlesshash", "socket:alg:seqpacket:0:hash:ownerless", 'kmods = ["algif_hash"]\n'),
}


def race_kind(kernel_spec, tmp_path: Path, kind: str, owner: bool) -> tuple[subprocess.CompletedProcess, dict]:
    """The kind's module raced as a target of a project of its own (its
    pyproject.toml names it), with `race --target`'s default callers."""
    folder, op, extra = KINDS[kind]
    src = tmp_path / folder
    shutil.copytree(REPO / "tests" / "project" / folder, src)
    if owner:
        with (src / "Kbuild").open("a") as kbuild:
            kbuild.write("ccflags-y += -DOWNERLESS_OWNER\n")
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.harness.targets.{folder}]\nmodule = "{folder}"\nsource = "{folder}"\nops = ["{op}"]\n{extra}'
    )
    proc, report = race_cli(kernel_spec.name, tmp_path, "--target", folder, "--duration", "20", "--seed", "5")
    assert report is not None, proc.stderr[-3000:]
    return proc, report


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_held_object_of_a_module_without_its_owner_crashes(kernel_spec, tmp_path, kind):
    proc, report = race_kind(kernel_spec, tmp_path, kind, owner=False)
    run = report["runs"][0]
    assert run["verdict"] == "crashed" and run["splats"], (run["problem"], proc.stderr[-3000:])
    print("splat:", run["splats"][0]["title"], "console:", run.get("console_log"))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_same_module_with_its_owner_races_clean(kernel_spec, tmp_path, kind):
    proc, report = race_kind(kernel_spec, tmp_path, kind, owner=True)
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1
    assert all(r["ok_live"] > 0 for r in run["reach"]), run["reach"]
