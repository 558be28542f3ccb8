"""A CI runner cancels a job with SIGINT, then SIGTERM, then SIGKILL: a
pytest session with a VM test running stops as a whole (no later test boots
a guest), its guests are torn down, and it exits 130 or 143 within seconds.
Killed outright, an xdist controller takes its workers' guests with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.tools import REPO, default_sigint, wait_until

PROJECT_TEST = """
import pathlib

def test_a_guest_that_sleeps(vm_factory):
    vm = vm_factory()
    pathlib.Path("guest-up").write_text(str(vm.ssh.run("echo up").stdout))
    vm.ssh.run("sleep 600", timeout=900)

def test_the_next_one_never_boots(vm_factory):
    pathlib.Path("next-test-ran").write_text("yes")
    vm_factory()
"""


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = {int(p) for p in out.split()}
    return kids | {g for k in kids for g in _children(k)}


def _session(tmp_path, tests: str, up: tuple[str, ...], *args: str) -> subprocess.Popen:
    """A pytest session of `tests` in its own folder, once the files `up`
    (written by its tests when their guests answer) are there: the state."""
    (tmp_path / "test_sleepy.py").write_text(tests)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )
    wait_until(lambda: all((tmp_path / name).exists() for name in up) or proc.poll() is not None, 600)
    assert all((tmp_path / name).exists() for name in up), proc.communicate()[0][-3000:]
    return proc


CANCELLED = [(signal.SIGINT, 130), (signal.SIGTERM, 143)]


@pytest.mark.parametrize("sig,status", CANCELLED, ids=lambda v: getattr(v, "name", str(v)))
def test_a_signal_stops_the_session_tears_the_guests_down_and_exits_cancelled(kernel_spec, tmp_path, sig, status):
    proc = _session(tmp_path, PROJECT_TEST, ("guest-up",), "--kernel", kernel_spec.name)
    qemus = {p for p in _children(proc.pid) if "qemu" in open(f"/proc/{p}/comm").read()}
    assert qemus, "no QEMU under the session"
    t0 = time.monotonic()
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == status, out[-3000:]
    assert took < 5, f"the session took {took:.1f} s to stop"
    assert not (tmp_path / "next-test-ran").exists(), "a test after the signal ran"
    assert not [p for p in qemus if os.path.exists(f"/proc/{p}")], "a QEMU of the session survived it"
    assert "Traceback" not in out, out[-3000:]


XDIST_TEST = """
import pathlib

def test_a(vm_factory):
    vm = vm_factory()
    pathlib.Path("guest-up-a").write_text(vm.ssh.run("echo up").stdout)
    vm.ssh.run("sleep 600", timeout=900)

def test_b(vm_factory):
    vm = vm_factory()
    pathlib.Path("guest-up-b").write_text(vm.ssh.run("echo up").stdout)
    vm.ssh.run("sleep 600", timeout=900)
"""


@pytest.mark.parametrize(
    "sig,status", [*CANCELLED, (signal.SIGKILL, -signal.SIGKILL)], ids=lambda v: getattr(v, "name", str(v))
)
def test_a_signal_to_an_xdist_session_reaches_its_workers_guests_at_once(kernel_spec, tmp_path, sig, status):
    proc = _session(tmp_path, XDIST_TEST, ("guest-up-a", "guest-up-b"), "--kernel", kernel_spec.name, "-n", "2")
    qemus = {p for p in _children(proc.pid) if "qemu" in open(f"/proc/{p}/comm").read()}
    assert len(qemus) == 2, "one guest per worker"
    workers = {p for p in _children(proc.pid) if open(f"/proc/{p}/comm").read().startswith("python")}
    t0 = time.monotonic()
    proc.send_signal(sig)
    wait_until(lambda: not [p for p in qemus if os.path.exists(f"/proc/{p}")], 10)
    gone_after = time.monotonic() - t0
    wait_until(lambda: not [p for p in workers if os.path.exists(f"/proc/{p}")], 10)
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")], "a worker outlived its session"
    out, _ = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert gone_after < 2, f"the workers' guests took {gone_after:.1f} s to go"
    assert proc.returncode == status and took < 5, (proc.returncode, took, out[-3000:])
