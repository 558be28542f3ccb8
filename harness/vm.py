"""One QEMU guest: boot, console capture, teardown.  Owns the QEMU process.

The serial console is driven by pexpect and written whole to a log per boot.
QEMU dies with us: it gets SIGKILL when the harness exits by any path
(context manager, atexit, signal, or PR_SET_PDEATHSIG if we are killed).
The atexit and SIGTERM hooks are installed when the first guest starts, not
on import, so importing the pytest plugin changes nothing in other projects.
"""

from __future__ import annotations

import atexit
import ctypes
import enum
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import pexpect

from .errors import HarnessError
from .image import READY_MARKER, Image
from .kernels import KernelFiles, damage_of_kernel
from .paths import build_dir, cache_dir
from .progress import progress
from .util import file_lock, need_tool

QEMU = "qemu-system-x86_64"
QBOOT = Path("/usr/share/qemu/qboot.rom")
ACCELS = ("auto", "kvm", "tcg")
# A working KVM prints the banner well under a second; TCG-like hangs never do.
KVM_PROBE_TIMEOUT_S = 3.0
_LIVE: "weakref.WeakSet[Vm]" = weakref.WeakSet()


@dataclass(frozen=True)
class VmConfig:
    """How to boot: everything that changes the guest's behaviour is here."""

    accel: str = "auto"
    cpus: int = 2
    memory_mb: int = 1024
    boot_timeout_s: float = 60.0
    rcu_expedited: bool = False  # after boot; recorded in every report
    hung_task_timeout_s: int = 0  # 0 keeps the kernel's default
    cmdline_extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.accel not in ACCELS:
            raise HarnessError(f"unknown accel {self.accel!r}; valid: {', '.join(ACCELS)}")
        if self.cpus < 1 or self.memory_mb < 256:
            raise HarnessError("a guest needs at least 1 CPU and 256 MiB")


class BootOutcome(enum.Enum):
    """How a boot ended; the value is the reason a failed boot gives."""

    READY = "ready"
    PANIC = "kernel panic"
    PORT_TAKEN = "the SSH forward's port was taken"
    QEMU_EXITED = "QEMU exited early"
    HUNG = "no ready marker within {timeout}s (hang?)"


class BootError(HarnessError):
    """The guest did not come up; carries the console tail and the log path."""

    def __init__(self, reason: str, log: Path, tail: str) -> None:
        super().__init__(f"{reason}; console log: {log}\n--- last console lines ---\n{tail}")
        self.log = log
        self.tail = tail


# ---------------------------------------------------------------- accel


def _qemu() -> str:
    return need_tool(QEMU, "qemu-system-x86")


def _kvm_verdict_path() -> Path:
    return cache_dir() / "accel.json"


def kvm_works(kernel: KernelFiles) -> bool:
    """Whether KVM really boots a kernel here (some hosts have /dev/kvm but
    QEMU aborts on MSR setup or hangs).  The verdict is remembered per host
    kernel and QEMU version."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu_version = subprocess.run([_qemu(), "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = f"{os.uname().release}|{qemu_version}"
    path = _kvm_verdict_path()
    with file_lock(path.with_suffix(".lock")):
        verdicts = json.loads(path.read_text()) if path.exists() else {}
        if key not in verdicts:
            progress("accel: checking whether KVM really boots a kernel here")
            verdicts[key] = _probe_kvm(kernel)
            path.write_text(json.dumps(verdicts, indent=1))
            progress(f"accel: KVM {'works' if verdicts[key] else 'does not work'}; verdict remembered")
    return bool(verdicts[key])


def _probe_kvm(kernel: KernelFiles) -> bool:
    """Boot the kernel with no initrd under KVM: it works if the kernel prints
    its banner within KVM_PROBE_TIMEOUT_S (it then panics for lack of a root
    fs).  A QEMU that aborts on MSR setup exits at once; one that hangs is a no."""
    cmd = [_qemu(), "-nodefaults", "-no-user-config", "-display", "none", "-accel", "kvm",
           "-cpu", "host", "-m", "256", "-kernel", str(kernel.boot_image), "-append",
           "console=ttyS0 panic=-1", "-no-reboot", "-serial", "stdio"]
    try:
        child = pexpect.spawn(cmd[0], cmd[1:], timeout=KVM_PROBE_TIMEOUT_S, preexec_fn=_die_with_parent)
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


# ---------------------------------------------------------------- process


def _die_with_parent() -> None:
    """QEMU gets SIGKILL if the harness dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (ptyprocess already setsid()s)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_all_live() -> None:
    for vm in list(_LIVE):
        vm.kill()


def _on_sigterm(signum: int, frame: object) -> None:
    """Kill the guests, then leave like an uncaught SIGTERM would (status 143)."""
    _kill_all_live()
    raise SystemExit(128 + signum)


_teardown_installed = False


def _install_teardown() -> None:
    """Once, when the first guest starts: kill guests at exit and on SIGTERM.
    A SIGTERM handler someone else installed is left alone, as is a SIGTERM
    from a non-main thread (signal handlers can only be set from there)."""
    global _teardown_installed
    if _teardown_installed:
        return
    _teardown_installed = True
    atexit.register(_kill_all_live)
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


def whole_lines_tail(text: str, lines: int) -> str:
    """The last complete lines of a console log; a last line the guest had not
    finished when the log was read is kept but marked as cut."""
    text = text.replace("\r", "")
    body, sep, partial = text.rpartition("\n")
    tail = body.splitlines()[-lines:] if sep else []
    if partial.strip():
        tail = tail[-(lines - 1):] if lines > 1 else []
        tail.append(partial + " [incomplete line]")
    return "\n".join(tail)


# ---------------------------------------------------------------- the guest


@dataclass
class Vm:
    """A running guest.  Use as a context manager, or call kill()."""

    image: Image
    config: VmConfig = field(default_factory=VmConfig)
    name: str = "guest"
    accel: str = ""
    port: int = 0
    log_path: Path = Path()
    boot_seconds: float = 0.0
    child: pexpect.spawn | None = None
    _ssh: object | None = None
    _pump: threading.Thread | None = None

    # -- lifecycle

    def __enter__(self) -> "Vm":
        if self.child is None:
            self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __hash__(self) -> int:
        return id(self)

    def qemu_argv(self) -> list[str]:
        kernel = self.image.kernel
        cmdline = ["console=ttyS0", "panic=-1", "quiet", "tsc=reliable", "no_timer_check",
                   # Boot-time savings under TCG: expedited RCU during boot only (init
                   # sets the run's value), and no crypto self-tests (about 0.3 s).
                   "rcupdate.rcu_expedited=1", "cryptomgr.notests",
                   "initcall_blacklist=crypto_kdf108_init,init_encrypted",
                   f"harness.rcu_expedited={int(self.config.rcu_expedited)}",
                   f"harness.hung_task_timeout={self.config.hung_task_timeout_s}",
                   *self.config.cmdline_extra]
        argv = [_qemu(), "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-m", str(self.config.memory_mb), "-smp", str(self.config.cpus),
                "-kernel", str(kernel.boot_image), "-initrd", str(self.image.initrd),
                "-append", " ".join(cmdline), "-serial", "stdio", "-monitor", "none",
                # restrict=on: the guest reaches nothing; only our forward reaches it.
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=n0"]
        if QBOOT.is_file():
            argv += ["-bios", str(QBOOT)]
        if self.accel == "kvm":
            argv += ["-accel", "kvm", "-cpu", "host"]
        else:
            argv += ["-accel", "tcg,thread=multi", "-cpu", "max"]
        return argv

    @property
    def boot_timeout_s(self) -> float:
        """The configured timeout scaled by the kernel's slowdown (debug kernels)."""
        return self.config.boot_timeout_s * self.image.kernel.time_factor

    def boot(self) -> "Vm":
        """Start QEMU and wait for the guest's ready marker."""
        kernel = self.image.kernel
        damaged = damage_of_kernel(kernel)
        if damaged:
            raise HarnessError(f"kernel {kernel.name} in the cache cannot be booted: {damaged}; "
                               f"run: python -m harness fetch --kernel {kernel.name}")
        damaged = self.image.damage()
        if damaged:
            raise HarnessError(f"the guest's initramfs changed after it was built: {damaged}; "
                               "build the image again")
        self.accel = choose_accel(self.config.accel, kernel)
        logs = build_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = logs / f"{stamp}-{kernel.name}-{self.name}-{os.getpid()}-{id(self) % 10000}.log"
        silent_retried = False
        for attempt in range(5):
            self.port = _free_port()
            progress(f"vm: booting {kernel.release} ({self.accel}, {self.config.cpus} CPUs), ssh on 127.0.0.1:{self.port}")
            t0 = time.monotonic()
            start = self.console_size()
            self._spawn()
            outcome = self._wait_ready()
            if outcome is BootOutcome.PORT_TAKEN and attempt < 4:
                self.kill()
                continue
            silent = self.console_text()[start:].count("\n") <= 1  # only our "# qemu ..." line
            if outcome is BootOutcome.HUNG and silent and not silent_retried:
                # Seen about once in a hundred TCG boots: not one byte from the
                # guest.  One more try; a kernel that really hangs fails again.
                progress(f"vm: the guest printed nothing in {self.boot_timeout_s:.0f}s; booting it once more")
                self.kill()
                silent_retried = True
                continue
            if outcome is not BootOutcome.READY:
                tail = self.console_tail()
                self.kill()
                why = outcome.value.format(timeout=f"{self.boot_timeout_s:.0f}")
                raise BootError(f"guest {kernel.name} failed to boot: {why}", self.log_path, tail)
            self.boot_seconds = time.monotonic() - t0
            progress(f"vm: ready in {self.boot_seconds:.2f}s")
            self._start_pump()
            return self
        raise HarnessError("could not find a free port for the guest's SSH forward")

    def _spawn(self) -> None:
        _install_teardown()
        argv = self.qemu_argv()
        log = open(self.log_path, "ab")
        log.write(("# " + " ".join(argv) + "\n").encode())
        log.flush()
        self.child = pexpect.spawn(argv[0], argv[1:], timeout=None, preexec_fn=_die_with_parent,
                                   maxread=65536, searchwindowsize=8192)
        self.child.logfile_read = log
        _LIVE.add(self)

    def _wait_ready(self) -> "BootOutcome":
        assert self.child is not None
        patterns: list = [READY_MARKER, r"Kernel panic - not syncing", r"Could not set up host forwarding rule",
                          pexpect.EOF, pexpect.TIMEOUT]
        outcomes = [BootOutcome.READY, BootOutcome.PANIC, BootOutcome.PORT_TAKEN, BootOutcome.QEMU_EXITED,
                    BootOutcome.HUNG]
        idx = self.child.expect(patterns, timeout=self.boot_timeout_s)
        if idx == 0:
            self.child.expect(r"\n", timeout=5)
        elif idx == 1:
            # panic=-1 and -no-reboot: QEMU exits right after the panic message;
            # read it whole so the console tail does not end mid-line.
            self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=3)
        return outcomes[idx]

    def _start_pump(self) -> None:
        """Keep reading the console after boot: a full pty would stall the
        guest's serial output, and with it the guest."""
        child = self.child

        def run() -> None:
            while child is not None and self.child is child:
                try:
                    child.read_nonblocking(65536, timeout=0.2)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break

        self._pump = threading.Thread(target=run, name=f"console-{self.name}", daemon=True)
        self._pump.start()

    def wait_console(self, pattern: str, timeout: float, start: int = 0) -> re.Match | None:
        """Wait until the console log (from byte `start`) matches a regex."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.console_text(), start)
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.child is not None and self.child.isalive()

    def console_text(self) -> str:
        """The whole console log so far."""
        if self.child is not None and self.child.logfile_read:
            self.child.logfile_read.flush()
        return self.log_path.read_bytes().decode(errors="replace") if self.log_path.is_file() else ""

    def console_size(self) -> int:
        """Bytes of console log so far: an offset for 'what appeared since'."""
        self.console_text()
        return self.log_path.stat().st_size if self.log_path.is_file() else 0

    def console_tail(self, lines: int = 30) -> str:
        return whole_lines_tail(self.console_text(), lines)

    def kill(self) -> None:
        """Tear down: close SSH, SIGKILL QEMU, reap it, close the log."""
        if self._ssh is not None:
            try:
                self._ssh.close()  # type: ignore[attr-defined]
            except Exception:
                pass
            self._ssh = None
        child, self.child = self.child, None
        _LIVE.discard(self)
        if child is None:
            return
        try:
            if child.pid is not None:
                os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._pump is not None:
            self._pump.join(timeout=2)
            self._pump = None
        try:
            child.close(force=True)
        except Exception:
            pass
        log = child.logfile_read
        if log is not None and hasattr(log, "close"):
            log.close()

    # -- SSH

    @property
    def ssh(self):  # -> Guest
        """The guest's SSH connection, opened on first use."""
        if self._ssh is None:
            from .ssh import Guest

            if not self.alive():
                raise HarnessError(f"guest is not running; console log: {self.log_path}")
            self._ssh = Guest.connect("127.0.0.1", self.port, self.image.ssh_key, self.image.host_key_pub)
        return self._ssh
