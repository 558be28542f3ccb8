"""The KVM probe decides within seconds; importing the harness installs no
signal handler; console tails end on whole lines.  QEMU is a fake script."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.guest import qemu, vm
from harness.kernels import ROWS, KernelFiles
from tests.tools import REPO


def _fake_qemu(tmp_path, monkeypatch, body: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / qemu.QEMU
    fake.write_text("#!/bin/sh\n" + body + "\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


KERNEL = KernelFiles(ROWS["6.1"], "r", "v", REPO / "no-such-kernel")


def _timed_probe() -> tuple[bool, float]:
    t0 = time.monotonic()
    verdict = qemu.probe_kvm(KERNEL)
    return verdict, time.monotonic() - t0


def test_a_hanging_kvm_is_a_no_within_seconds(tmp_path, monkeypatch):
    _fake_qemu(tmp_path, monkeypatch, "exec sleep 60")
    verdict, took = _timed_probe()
    # The probe's own timeout plus teardown; a loaded CI machine once took
    # 3.52 s, and what this guards against is waiting for QEMU (60 s here).
    assert verdict is False and took < qemu.KVM_PROBE_TIMEOUT_S + 2


def test_a_kernel_banner_is_a_yes_at_once(tmp_path, monkeypatch):
    _fake_qemu(
        tmp_path, monkeypatch, "echo 'Linux version 6.1.0-99-amd64 (debian-kernel@lists.debian.org)'; exec sleep 60"
    )
    verdict, took = _timed_probe()
    assert verdict is True and took < 1.5


def test_a_qemu_aborting_on_msr_is_a_no_at_once(tmp_path, monkeypatch):
    _fake_qemu(tmp_path, monkeypatch, "echo 'qemu: error: failed to set MSR 0x48b to 0x0' >&2; exit 1")
    verdict, took = _timed_probe()
    assert verdict is False and took < 1.5


PROBE_SIGNALS = """
import signal, sys
import harness.guest.vm, harness.pytest_plugin
print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, harness.guest.vm._teardown_installed)
harness.guest.vm._install_teardown()
print(signal.getsignal(signal.SIGTERM) is harness.guest.vm._on_sigterm)
sys.stdout.flush()
import os
os.kill(os.getpid(), signal.SIGTERM)
print("not reached")
"""


def test_importing_installs_no_handler_and_the_first_guest_does():
    res = subprocess.run([sys.executable, "-c", PROBE_SIGNALS], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["True", "False", "True"], res.stderr
    assert res.returncode == 128 + signal.SIGTERM


KEEP_HANDLER = """
import signal
def mine(signum, frame): pass
signal.signal(signal.SIGTERM, mine)
import harness.guest.vm
harness.guest.vm._install_teardown()
print(signal.getsignal(signal.SIGTERM) is mine)
"""


def test_someone_elses_sigterm_handler_is_left_alone():
    res = subprocess.run([sys.executable, "-c", KEEP_HANDLER], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "True", res.stderr


@pytest.mark.parametrize(
    "text, lines, tail",
    [
        ("a\r\nb\nc\n", 2, "b\nc"),
        (
            "a\nb\nKernel panic - not syncing: VFS: Unable to mount ro",
            2,
            "b\nKernel panic - not syncing: VFS: Unable to mount ro [incomplete line]",
        ),
        ("a\nb\n\n", 5, "a\nb"),
        ("", 3, ""),
    ],
)
def test_console_tails_end_on_whole_lines(text, lines, tail):
    assert vm.whole_lines_tail(text, lines) == tail
