"""Parallel guests within the machine's means: N guests' memory against
what is available (refused in one line), N against the cores (a warning)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import HarnessError
from harness.guest.vmconfig import QEMU_OVERHEAD_MB, check_parallel
from tests.tools import REPO


def test_guests_that_fit_in_memory_and_cores_pass_quietly():
    assert check_parallel(2, 1024, available_mb=4096, cores=2) is None


def test_more_guests_than_memory_are_refused_with_how_many_fit():
    each = 1024 + QEMU_OVERHEAD_MB
    with pytest.raises(HarnessError) as e:
        check_parallel(8, 1024, available_mb=3 * each + 10, cores=16)
    assert str(e.value) == (
        f"8 guests at once need {8 * each} MiB (1024 MiB each and {QEMU_OVERHEAD_MB} MiB for its QEMU), "
        f"this machine has {3 * each + 10} MiB available; run at most 3"
    )


def test_more_guests_than_cores_is_a_warning():
    assert check_parallel(4, 1024, available_mb=100000, cores=2) == (
        "4 guests at once on 2 cores: each gets less than a core, and races change their timing"
    )


def test_pytest_n_beyond_the_machine_is_one_usage_line(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "1000", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "1000 guests at once need" in lines[0], proc.stderr
