"""An unusable cache or build folder is one line naming the variable and the fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness import paths
from harness.errors import HarnessError
from harness.paths import REPO


@pytest.mark.parametrize("var, func", [("HARNESS_CACHE", paths.cache_dir), ("HARNESS_BUILD", paths.build_dir)])
def test_a_folder_that_cannot_be_made_is_a_harness_error(monkeypatch, var, func):
    monkeypatch.setenv(var, "/proc/x")
    with pytest.raises(HarnessError) as e:
        func()
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot use {var}=/proc/x as the ") and f"point {var} at a writable folder" in msg


def test_a_file_in_the_way_is_a_harness_error(monkeypatch, tmp_path):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "f" / "cache"))
    with pytest.raises(HarnessError, match="Not a directory"):
        paths.cache_dir()


def test_a_usable_folder_is_made(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "a" / "b"))
    assert paths.build_dir() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("argv", [["kernels"], ["fetch", "--kernel", "6.1"]])
def test_the_cli_prints_one_error_line_and_exits_2(argv):
    env = dict(os.environ, HARNESS_CACHE="/proc/x")
    res = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [res.stderr.strip()] and res.stderr.startswith("error: cannot use HARNESS_CACHE=/proc/x")
