"""The QEMU side of a guest: the binary and its version, the accelerator that
really works here, the guest's command line, and a QEMU process that dies with us.

`vm.py` owns the guest's lifecycle; everything here is about QEMU itself.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pexpect
import ptyprocess  # type: ignore[import-untyped]

from ..errors import HarnessError
from ..kernels import KernelFiles
from ..paths import cache_dir
from ..progress import progress
from ..util import file_lock, need_tool

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")
ACCELS = ("auto", "kvm", "tcg")
# A working KVM prints the banner well under a second; TCG-like hangs never do.
KVM_PROBE_TIMEOUT_S = 3.0
PORT_TAKEN_TEXT = "Could not set up host forwarding rule"  # QEMU's words when the forward's port is in use


def qemu_binary() -> str:
    """QEMU's path; a HarnessError naming the package when it is missing."""
    return need_tool(QEMU, "qemu-system-x86")


@functools.lru_cache(maxsize=None)
def qemu_version() -> str:
    return subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True).stdout.split("\n")[0]


# ---------------------------------------------------------------- accel


def _kvm_verdict_path() -> Path:
    return cache_dir() / "accel.json"


def kvm_works(kernel: KernelFiles) -> bool:
    """Whether KVM really boots a kernel here (some hosts have /dev/kvm but
    QEMU aborts on MSR setup or hangs).  The verdict is remembered per host
    kernel and QEMU version."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = f"{os.uname().release}|{qemu_version()}"
    path = _kvm_verdict_path()
    with file_lock(path.with_suffix(".lock")):
        verdicts = json.loads(path.read_text()) if path.exists() else {}
        if key not in verdicts:
            progress("accel: checking whether KVM really boots a kernel here")
            verdicts[key] = probe_kvm(kernel)
            path.write_text(json.dumps(verdicts, indent=1))
            progress(f"accel: KVM {'works' if verdicts[key] else 'does not work'}; verdict remembered")
    return bool(verdicts[key])


def probe_kvm(kernel: KernelFiles) -> bool:
    """Boot the kernel with no initrd under KVM: it works if the kernel prints
    its banner within KVM_PROBE_TIMEOUT_S (it then panics for lack of a root
    fs).  A QEMU that aborts on MSR setup exits at once; one that hangs is a no."""
    cmd = [
        qemu_binary(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-kernel",
        str(kernel.boot_image),
        "-append",
        "console=ttyS0 panic=-1",
        "-no-reboot",
        "-serial",
        "stdio",
    ]
    try:
        child = pexpect.spawn(cmd[0], cmd[1:], timeout=KVM_PROBE_TIMEOUT_S, preexec_fn=die_with_parent)
    except pexpect.ExceptionPexpect:
        return False
    try:
        return child.expect([r"Linux version", pexpect.EOF, pexpect.TIMEOUT]) == 0
    finally:
        child.terminate(force=True)


def choose_accel(requested: str, kernel: KernelFiles) -> str:
    if requested == "tcg":
        return "tcg"
    works = kvm_works(kernel)
    if requested == "kvm" and not works:
        raise HarnessError("KVM was asked for but does not boot a kernel on this host; use --accel tcg or auto")
    return "kvm" if works else "tcg"


# ---------------------------------------------------------------- the command line


def guest_argv(
    kernel: KernelFiles,
    initrd: Path,
    accel: str,
    port: int,
    *,
    cpus: int,
    memory_mb: int,
    cmdline_extra: tuple[str, ...] = (),
    modtree: Path | None = None,
) -> list[str]:
    """A guest's QEMU command line, its SSH forwarded from 127.0.0.1:`port`.
    The run's settings (rcu_expedited, hung task timeout) are not on it:
    they come with the start line, so that one snapshot serves them all."""
    # console=ttyS0: the serial port is the console log, where splats are read.
    # panic=-1: a panic reboots at once, and -no-reboot makes that QEMU's exit,
    #   so a crashed guest ends its run now rather than at a timeout.
    # loglevel=5, not quiet: boot chatter (KERN_INFO and up) stays off the
    #   slow emulated serial port, but WARNINGs and lockdep reports
    #   (KERN_WARNING) reach it, so a splat during the boot is seen; init
    #   turns every message on once the guest is up.
    # tsc=reliable, no_timer_check: a busy host stalls vCPUs, which would make
    #   the clocksource watchdog drop the TSC for a slow clock and the boot-time
    #   timer IRQ check fail; neither check means anything in a VM.
    cmdline = [
        "console=ttyS0",
        "panic=-1",
        "loglevel=5",
        "tsc=reliable",
        "no_timer_check",
        # Boot-time savings under TCG: expedited RCU during boot only (init
        # sets the run's value), and no crypto self-tests (about 0.3 s).
        "rcupdate.rcu_expedited=1",
        "cryptomgr.notests",
        "initcall_blacklist=crypto_kdf108_init,init_encrypted",
        *kernel.cmdline,
        *cmdline_extra,
    ]
    # -nodefaults, -no-user-config: only the devices named here and no host
    #   config file, so every host builds the same machine (the snapshot key
    #   hashes this line) and the kernel probes nothing it does not need.
    # -display none: hosts and CI runners have no screen.
    # -no-reboot: a guest that reboots (panic=-1, a triple fault) is over.
    argv = [
        qemu_binary(),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        # Memory and CPUs are the config's: part of the key, one snapshot per size.
        "-m",
        str(memory_mb),
        "-smp",
        str(cpus),
        # Direct kernel boot: no bootloader and no disk, the initramfs is the root.
        "-kernel",
        str(kernel.boot_image),
        "-initrd",
        str(initrd),
        # -serial stdio: the console reaches the harness through QEMU's pty.
        # -monitor none: keep QEMU's monitor off that stdio; the harness uses QMP.
        "-append",
        " ".join(cmdline),
        "-serial",
        "stdio",
        "-monitor",
        "none",
        # restrict=on: the guest reaches nothing; only our forward reaches it.
        "-netdev",
        f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        # virtio: the NIC of the image's boot modules, the cheapest to emulate.
        "-device",
        "virtio-net-pci,netdev=n0",
        # vmcoreinfo: the guest's qemu_fw_cfg driver tells QEMU where its
        # VMCOREINFO note is, and dump-guest-memory (race --dump) puts it in
        # the vmcore, without which drgn and crash cannot read one.
        "-device",
        "vmcoreinfo",
    ]
    if modtree is not None:
        # The kernel's module tree (a squashfs the guest's init mounts),
        # read-only: no guest can change what the next one restores.
        argv += ["-drive", f"file={modtree},if=virtio,format=raw,readonly=on"]
    if QBOOT.is_file():
        # qboot instead of SeaBIOS: a firmware that only boots Linux, in a
        # fraction of SeaBIOS's time.
        argv += ["-bios", str(QBOOT)]
    if accel == "kvm":
        # KVM hands the guest the host's own CPU model at full speed.
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        # thread=multi: one host thread per vCPU, so -smp N uses N host cores;
        # -cpu max: every feature TCG emulates, the closest to a real CPU.
        argv += ["-accel", "tcg,thread=multi", "-cpu", "max"]
    return argv


def machine_files(kernel: KernelFiles, initrd: Path, modtree: Path | None = None) -> list[Path]:
    """The files a guest's QEMU loads: with its command line and QEMU's
    version, what a snapshot of it is keyed by."""
    qemu = qemu_binary()
    files = [Path(shutil.which(qemu) or qemu), kernel.boot_image, initrd, *([modtree] if modtree else [])]
    if QBOOT.is_file():
        files.append(QBOOT)
    return files


# ---------------------------------------------------------------- the process


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """This process gets `sig` when its parent dies, even by SIGKILL: QEMU
    (as a preexec_fn) the default SIGKILL, an xdist worker a SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, sig)  # PR_SET_PDEATHSIG (ptyprocess already setsid()s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Spawn(pexpect.spawn):
    """pexpect's spawn, handing QEMU its end of the control socket."""

    def __init__(self, *args: Any, pass_fds: tuple[int, ...] = (), **kwargs: Any) -> None:
        self._pass_fds = pass_fds
        super().__init__(*args, **kwargs)

    def _spawnpty(self, args: list, **kwargs: Any) -> Any:
        return ptyprocess.PtyProcess.spawn(args, pass_fds=self._pass_fds, **kwargs)
