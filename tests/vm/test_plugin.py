"""The pytest plugin as another project would use it: a splat during a VM test
fails that test (with the splat in the report), unless it is expected."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.tools import REPO

INNER = """
import pytest

WARN = "WARNING: CPU: 0 PID: 1 at drivers/fake/fake.c:42 fake_probe+0x10/0x20 [fake]"


def test_quiet(vm):
    assert vm.ssh.run("true").ok


def test_splats(vm):
    vm.ssh.run(f"echo '{WARN}' > /dev/kmsg", check=True)
    assert vm.wait_console("fake_probe", timeout=10)


@pytest.mark.expect_splat
def test_expected(vm):
    vm.ssh.run(f"echo '{WARN}' > /dev/kmsg", check=True)
    assert vm.wait_console("fake_probe", timeout=10)
"""


def test_new_splat_fails_the_test_unless_expected(tmp_path, kernel_spec, kernel):
    (tmp_path / "test_inner.py").write_text(INNER)
    env = dict(
        os.environ,
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "harness.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "-rA",
            "--kernel",
            kernel_spec.name,
            str(tmp_path / "test_inner.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    out = res.stdout
    assert res.returncode == 1, out
    assert f"PASSED test_inner.py::test_quiet[{kernel_spec.name}]" in out
    assert f"FAILED test_inner.py::test_splats[{kernel_spec.name}]" in out
    assert f"PASSED test_inner.py::test_expected[{kernel_spec.name}]" in out
    assert "new console splat(s) during the test" in out and "fake_probe" in out
    assert "console log" in out
