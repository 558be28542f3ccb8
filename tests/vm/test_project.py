"""Another project (tests/project: its own two-file module, a bash check and a
python3 helper) run by pytest with only what it has: its test file, its
pytest.ini asking for guest packages, and the harness's plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent / "project"


def test_another_project_builds_loads_reads_and_unloads_its_module(kernel_spec):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--kernel", kernel_spec.name, "-rA"],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert f"PASSED test_mydrv.py::test_mydrv_loads_reads_and_unloads[{kernel_spec.name}]" in proc.stdout
