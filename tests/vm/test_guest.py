"""The guest pipeline on a real kernel: boot, SSH, console, teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness.guest.vm import BootError, Vm, VmConfig
from tests.tools import REPO, default_sigint, wait_until


def _qemu_on_port(port: int) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"hostfwd=tcp:127.0.0.1:{port}-"], capture_output=True, text=True)
    return out.stdout.split()


def test_guest_runs_the_requested_kernel(vm, kernel):
    res = vm.ssh.run("cat /proc/version; uname -r", check=True)
    version, release = res.stdout.splitlines()
    assert release == kernel.release
    assert kernel.version.split("-")[0].split("~")[0] in version  # e.g. 6.1.192


def test_request_module_runs_kmods_modprobe(vm):
    res = vm.ssh.run("cat /proc/sys/kernel/modprobe; readlink /sbin/modprobe; modprobe --version", check=True)
    lines = res.stdout.splitlines()
    assert lines[0] == "/sbin/modprobe" and lines[1] == "/bin/kmod"
    assert lines[2].startswith("kmod version"), "the shell must not run busybox's modprobe applet"


@pytest.mark.fresh_vm
def test_a_plain_guest_loads_any_module_of_its_kernel_with_its_soft_dependencies(vm):
    """Every guest has its kernel's whole module tree (a read-only disk), as
    a real system does: modprobe finds any module, its dependencies and soft
    dependencies (libcrc32c's `softdep pre: crc32c`, asked for at its init)."""
    res = vm.ssh.run("modprobe -a sctp udf isofs vxlan && lsmod", check=True)
    mods = {ln.split()[0] for ln in res.stdout.splitlines()[1:]}
    assert {"sctp", "udf", "isofs", "vxlan"} <= mods, sorted(mods)
    if "libcrc32c" in mods:
        assert mods & {"crc32c_generic", "crc32c_intel"}, sorted(mods)


def test_the_guest_has_what_programs_expect_of_a_debian_system(vm, kernel):
    """Users and groups, the kernel's config, os-release, a writable /tmp, /usr/bin/env, /dev/fd."""

    def run(cmd: str) -> str:
        res = vm.ssh.run(cmd)
        assert res.ok, f"{cmd}: {res.stderr or res.stdout}"
        return res.stdout.strip()

    assert run("id nobody") == "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)"
    assert run("id -u daemon; grep ^nogroup: /etc/group") == "1\nnogroup:*:65534:"
    assert run("cat /boot/config-$(uname -r) | grep CONFIG_MODULES=y") == "CONFIG_MODULES=y"
    assert run(f"test -f /boot/System.map-{kernel.release} && echo ok") == "ok"
    assert run(". /etc/os-release && echo $ID $VERSION_CODENAME") == "debian bookworm"
    assert run("echo probe > /tmp/harness-probe && cat /tmp/harness-probe && rm /tmp/harness-probe") == "probe"
    assert run("/usr/bin/env echo merged") == "merged"
    assert run("readlink /dev/fd; readlink /dev/stdin; echo fd | cat /dev/stdin") == "/proc/self/fd\nfd/0\nfd"


def test_exit_status_and_streams(vm):
    res = vm.ssh.run("echo out; echo err >&2; exit 7")
    assert (res.exit_status, res.stdout, res.stderr) == (7, "out\n", "err\n")


def test_commands_run_concurrently_on_one_connection(vm):
    t0 = time.monotonic()
    results = vm.ssh.run_many(["sleep 2; echo a", "sleep 2; echo b", "sleep 2; echo c"])
    elapsed = time.monotonic() - t0
    assert [r.stdout for r in results] == ["a\n", "b\n", "c\n"]
    assert elapsed < 4.0, f"three 2 s sleeps took {elapsed:.1f}s: not concurrent"


def test_upload_round_trip(vm):
    data = os.urandom(300_000)
    vm.ssh.upload(data, "/tmp/blob", mode=0o600)
    res = vm.ssh.run("stat -c '%s %a' /tmp/blob; md5sum /tmp/blob", check=True)
    import hashlib

    size_mode, digest = res.stdout.splitlines()
    assert size_mode == "300000 600"
    assert digest.split()[0] == hashlib.md5(data).hexdigest()


def test_console_is_captured_whole(vm):
    vm.ssh.run("echo harness-console-probe > /dev/kmsg", check=True)
    assert vm.wait_console(r"harness-console-probe", timeout=10)
    assert "Linux version" in vm.console_text() or "HARNESS-GUEST-READY" in vm.console_text()


def test_failed_boot_raises_with_console_and_leaves_no_qemu(image):
    guest = Vm(image, VmConfig(accel="tcg", boot_timeout_s=60, cmdline_extra=("rdinit=/no-such-init",)))
    with pytest.raises(BootError) as e:
        guest.boot()
    assert "kernel panic" in str(e.value) or "QEMU exited early" in str(e.value)
    assert "Kernel panic" in e.value.tail
    assert e.value.log.is_file()
    assert not _qemu_on_port(guest.port)


def test_boot_timeout_is_a_clear_error_and_kills_qemu(image):
    guest = Vm(image, VmConfig(accel="tcg", boot_timeout_s=1.0, cold_boot=True))
    with pytest.raises(BootError, match="no ready marker within"):
        guest.boot()
    assert not _qemu_on_port(guest.port)


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        **kw,
    )


def _port_from(stderr_line: str) -> int:
    return int(stderr_line.rsplit(":", 1)[1])


def _wait_for_boot_line(proc: subprocess.Popen) -> int:
    for line in proc.stderr:
        if "ssh on 127.0.0.1:" in line:
            return _port_from(line.strip())
    raise AssertionError("the CLI never booted a guest")


def _wait_for_ready_line(proc: subprocess.Popen) -> None:
    for line in proc.stderr:
        if "vm: ready" in line:
            return
    raise AssertionError("the CLI's guest never became ready")


def test_cli_run_prints_the_version_and_exit_code(kernel_spec, kernel):
    proc = _cli("run", "--kernel", kernel_spec.name, "--", "cat /proc/version; exit 5")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 5, err
    assert out.startswith("Linux version " + kernel.release)


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_qemu_outlives_the_cli(kernel_spec, kernel, how):
    proc = _cli("run", "--kernel", kernel_spec.name, "--", "sleep 600")
    port = _wait_for_boot_line(proc)
    _wait_for_ready_line(proc)
    assert _qemu_on_port(port)
    proc.send_signal(how)
    proc.wait(timeout=30)
    assert wait_until(lambda: not _qemu_on_port(port), 10), f"QEMU survived {how.name} of the harness"
    if how != signal.SIGKILL:
        assert "Traceback" not in proc.stderr.read()
