"""Debian packages in the guest (`--guest-packages`, the pytest option, ini
line and vm_factory argument) on a real kernel.  Every guest here has the
same set, so after the first cold boot they all restore one snapshot."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.tools import REPO

PACKAGES = ("bash", "python3-minimal")
PYTHON_FROM_BASH = """bash -c 'python3 -c "print(1)"'"""


def test_run_with_guest_packages_runs_python_from_bash(kernel_spec, kernel):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "run",
            "--kernel",
            kernel_spec.name,
            "--guest-packages",
            ",".join(PACKAGES),
            "--",
            "bash",
            "-c",
            'python3 -c "print(1)"',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert (res.returncode, res.stdout) == (0, "1\n"), res.stderr


def test_vm_factory_packages_in_a_merged_usr_beside_busybox_and_kmod(vm_factory):
    vm = vm_factory(guest_packages=PACKAGES)
    assert {p.split("=")[0] for p in vm.image.packages} >= {"bash", "python3-minimal", "libc6"}
    res = vm.ssh.run(
        "/usr/bin/bash -c 'echo ${BASH_VERSINFO[0]}'; /bin/python3 -c 'import sys; print(sys.prefix)'; "
        "readlink /bin/sh; /sbin/modprobe --version | head -1; cat /proc/sys/kernel/modprobe",
        check=True,
    )
    lines = res.stdout.splitlines()
    assert len(lines) == 5, res.stdout + res.stderr
    bash_major, prefix, sh, kmod, modprobe = lines
    assert int(bash_major) >= 5 and prefix == "/usr"
    assert sh == "busybox", "the guest's shell stays busybox's"
    assert kmod.startswith("kmod version") and modprobe == "/sbin/modprobe"


INNER = '''
def test_tools(vm, guest_packages):
    assert guest_packages == ("bash", "python3-minimal")
    assert vm.ssh.run("""bash -c 'python3 -c "print(1)"'""").stdout == "1\\n"
'''


def test_an_ini_line_gives_every_guest_the_packages(tmp_path, kernel_spec, kernel):
    (tmp_path / "pytest.ini").write_text("[pytest]\nguest_packages = python3-minimal bash\n")
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
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"PASSED test_inner.py::test_tools[{kernel_spec.name}]" in res.stdout
