"""Front-end errors are one clear line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys

from harness.paths import REPO


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=env)


def test_unknown_kernel_lists_the_valid_ones():
    res = _run("run", "--kernel", "9.9", "--", "true")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: unknown kernel spec '9.9'; valid: 6.1, 6.1-rt, 6.12, 6.12-rt, all"]


def test_missing_qemu_names_the_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    res = _run("run", "--", "true", env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86"]


def test_run_without_a_command():
    res = _run("run", "--kernel", "9.9")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_bad_option_is_usage_error():
    res = _run("run", "--accel", "warp", "--", "true")
    assert res.returncode == 2 and "invalid choice" in res.stderr and "Traceback" not in res.stderr
