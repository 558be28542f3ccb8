"""One QEMU guest: boot or restore, console capture, teardown.  Owns the QEMU process
(its command line and accelerator are `qemu.py`'s).

A guest starts from a snapshot of its kernel's base guest when there is one
(`harness/guest/snapshot.py`), else it boots cold and saves that snapshot on the way.
Either way init then waits for the host's start line (fresh randomness, the
clock, the run's settings), starts the SSH server and prints the ready
marker; then the image's payload (modules, racer) is unpacked over SSH.

The serial console is driven by pexpect and written whole to a log per boot.
QEMU dies with us: it gets SIGKILL when the harness exits by any path
(context manager, atexit, signal, or PR_SET_PDEATHSIG if we are killed).
The atexit and SIGTERM hooks are installed when the first guest starts, not
on import, so importing the pytest plugin changes nothing in other projects.
"""

from __future__ import annotations

import atexit
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pexpect

from ..errors import HarnessError
from ..kernels import damage_of_kernel
from ..paths import build_dir
from ..progress import progress
from ..util import NO_SPACE, no_space, try_file_lock
from . import snapshot
from .image import READY_MARKER, SEED_BYTES, START_FAILED_MARKER, WAIT_MARKER, Image, start_line
from .qemu import (
    ACCELS,
    PORT_TAKEN_TEXT,
    QEMU,
    Spawn,
    choose_accel,
    die_with_parent,
    free_port,
    guest_argv,
    machine_files,
    qemu_binary,
    qemu_version,
)
from .qmp import Qmp, QmpError
from .snapshot import ColdReason, GuestStart, Snapshot, StartPath
from .splat import Splat, new_splats
from .vmconfig import BootError, BootOutcome, VmConfig, whole_lines_tail

__all__ = ["ACCELS", "BootError", "BootOutcome", "Vm", "VmConfig", "qemu_binary", "whole_lines_tail"]

# A restored guest is ready in about a second; more than this is a broken snapshot.
RESTORE_TIMEOUT_S = 20.0
SAVE_TIMEOUT_S = 120.0
DUMP_TIMEOUT_S = 300.0  # a 1 GiB guest's memory to a busy disk
# How often wait_guest() checks its condition in the guest.
GUEST_POLL_S = 0.05


def poll_until(condition: str, timeout: float) -> str:
    """A guest shell snippet that returns 0 once `condition` holds, 1 after
    about `timeout` seconds of polls: for waiting on a state inside a script
    whose next step must follow it at once (wait_guest's own SSH round trip
    would come too late)."""
    polls = max(1, int(timeout / GUEST_POLL_S))
    return (
        f"(i=0; while [ $i -lt {polls} ]; do ( {condition} ) && exit 0; i=$((i+1)); sleep {GUEST_POLL_S}; done; exit 1)"
    )


_LIVE: "weakref.WeakSet[Vm]" = weakref.WeakSet()


# ---------------------------------------------------------------- teardown


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
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) in (
        signal.SIG_DFL,
        None,
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)


def _preload_paramiko() -> None:
    """Import the SSH library (0.2 s) while the guest comes up, not after."""
    if "paramiko" not in sys.modules:
        threading.Thread(
            target=importlib.import_module, args=("paramiko",), name="import-paramiko", daemon=True
        ).start()


class _RestoreFailed(HarnessError):
    """A snapshot did not give a ready guest; the caller boots cold instead."""


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
    start: GuestStart | None = None  # how it started: cold or restored, and why
    # Splats of this guest's boot, up to its ready marker: a guest that has
    # them was broken before any test began (a restored guest's base boot has
    # none: such a snapshot is stale).
    boot_splats: tuple[Splat, ...] = ()
    ready_offset: int = 0  # console log offset at the guest's ready marker: what follows is the guest's use
    child: pexpect.spawn | None = None
    qmp: Qmp | None = None
    _ssh: object | None = None
    _pump: threading.Thread | None = None
    _boot_offset: int = 0  # console log offset where this guest's boot began

    # -- lifecycle

    def __enter__(self) -> "Vm":
        if self.child is None:
            self.boot()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __hash__(self) -> int:
        return id(self)

    def qemu_argv(self, port: int | None = None) -> list[str]:
        """The guest's QEMU command line; `port` defaults to the guest's own."""
        return guest_argv(
            self.image.kernel,
            self.image.initrd,
            self.accel,
            self.port if port is None else port,
            cpus=self.config.cpus,
            memory_mb=self.config.memory_mb,
            cmdline_extra=self.config.cmdline_extra,
            modtree=self.image.modtree,
        )

    @property
    def boot_timeout_s(self) -> float:
        """The configured timeout scaled by the kernel's slowdown (debug kernels)."""
        return self.config.boot_timeout_s * self.image.kernel.time_factor

    @property
    def restore_timeout_s(self) -> float:
        return RESTORE_TIMEOUT_S * self.image.kernel.time_factor

    def snapshot(self) -> Snapshot:
        """The snapshot this guest would start from (or save): keyed by its
        QEMU command line without the port, the files it loads, QEMU's version."""
        return Snapshot.for_key(
            snapshot.snapshot_key(
                self.qemu_argv(port=0),
                machine_files(self.image.kernel, self.image.initrd, self.image.modtree),
                qemu_version(),
            )
        )

    def boot(self) -> "Vm":
        """Start the guest (restored, or cold) and install the payload."""
        kernel = self.image.kernel
        damaged = damage_of_kernel(kernel)
        if damaged:
            raise HarnessError(
                f"kernel {kernel.name} in the cache cannot be booted: {damaged}; "
                f"run: python -m harness fetch --kernel {kernel.name}"
            )
        damaged = self.image.damage()
        if damaged:
            raise HarnessError(f"the guest's image changed after it was built: {damaged}; build the image again")
        self.accel = choose_accel(self.config.accel, kernel)
        logs = build_dir() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = logs / f"{stamp}-{kernel.label}-{self.name}-{os.getpid()}-{id(self) % 10000}.log"
        t0 = time.monotonic()
        _preload_paramiko()
        self.start = None
        snap: Snapshot | None = None
        reason, detail = ColdReason.ASKED, ""
        if not self.config.cold_boot:
            snap = self.snapshot()
            gen, detail = snap.current()
            reason = ColdReason.STALE if detail else ColdReason.MISSING
            unrestorable = snap.unrestorable()
            if unrestorable:
                # Saved anew and failed again: this QEMU cannot restore what it
                # saves.  Boot cold without saving rather than pay twice each time.
                reason, detail, snap = ColdReason.UNSAVABLE, unrestorable, None
            elif gen is not None:
                try:
                    self._restore(snap, gen)
                except _RestoreFailed as e:
                    self.kill()
                    snap.failed(gen, str(e))  # forgotten, so that the cold boot saves a new one
                    reason, detail = ColdReason.FAILED, str(e)
        if self.start is None:
            progress(f"vm: cold boot: {reason.say(detail)}")
            self._cold_boot(snap, reason, detail)
        try:
            self._install_payload()
        except BaseException:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - t0
        assert self.start is not None
        self.ready_offset = self.console_size()
        self.boot_splats = tuple(new_splats(self.console_text(), self._boot_offset, self.ready_offset))
        progress(f"vm: ready in {self.boot_seconds:.2f}s ({self.start.describe()})")
        return self

    def _restore(self, snap: Snapshot, gen: Path) -> None:
        kernel = self.image.kernel
        for attempt in range(5):
            self.port = free_port()
            progress(
                f"vm: restoring {kernel.release} ({self.accel}) from snapshot {snap.key}, ssh on 127.0.0.1:{self.port}"
            )
            self._boot_offset = self.console_size()
            self._spawn(
                snapshot.restore_args(gen / "ram", self.config.memory_mb, share=False),
                note=f"restored from snapshot {gen}; the base guest's boot: {gen / snapshot.BASE_LOG}",
            )
            try:
                self._restore_state(gen)
                break
            except _RestoreFailed:
                # Someone took the port between our probe and QEMU's bind: not the snapshot's fault.
                if PORT_TAKEN_TEXT not in self.console_text() or attempt == 4:
                    raise
                self.kill()
        outcome = self._send_start(self.restore_timeout_s)
        if outcome is not BootOutcome.READY:
            why = outcome.value.format(timeout=f"{self.restore_timeout_s:.0f}")
            raise _RestoreFailed(f"{why}; console log: {self.log_path}")
        self.start = GuestStart(StartPath.RESTORED, snapshot=snap.key)
        snap.used()
        self._start_pump()

    def _restore_state(self, gen: Path) -> None:
        """Load the device state into the paused QEMU and let it run."""
        assert self.qmp is not None
        try:
            self.qmp.cmd("migrate-set-capabilities", capabilities=snapshot.IGNORE_SHARED)
            self.qmp.cmd("migrate-incoming", uri=snapshot.load_uri(gen / "state"))
            status = self.qmp.wait_status(("inmigrate",), self.restore_timeout_s)
            if status != "paused":
                raise _RestoreFailed(f"QEMU left the restore in state {status!r}")
            self.qmp.cmd("cont")
        except QmpError as e:
            raise _RestoreFailed(f"{self._qemu_said() or e}; console log: {self.log_path}") from e

    def _qemu_said(self) -> str:
        """QEMU's own last error line on the console (a state it cannot load)."""
        if self.child is not None:
            try:
                self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=2)  # read what it printed as it died
            except (OSError, ValueError):
                pass
        lines = [ln for ln in self.console_text().splitlines() if f"{QEMU}:" in ln and not ln.startswith("# ")]
        return lines[-1].strip() if lines else ""

    def _cold_boot(self, snap: Snapshot | None, reason: ColdReason, detail: str) -> None:
        kernel = self.image.kernel
        silent_retried = splat_retried = False
        for attempt in range(5):
            self.port = free_port()
            progress(
                f"vm: booting {kernel.release} ({self.accel}, {self.config.cpus} CPUs), ssh on 127.0.0.1:{self.port}"
            )
            t0 = time.monotonic()
            start = self._boot_offset = self.console_size()
            self._spawn()
            outcome = self._wait_boot()
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
            saved = False
            if outcome is BootOutcome.WAITING:
                splats = new_splats(self.console_text(), start)
                if splats and not splat_retried:
                    # Never saved: every guest restored from it would carry
                    # the report, and a sanitiser that reports once is spent.
                    progress(
                        f"vm: the boot showed a splat ({splats[0].title}); not a guest to test on "
                        "or to save; booting once more"
                    )
                    self.kill()
                    splat_retried = True
                    continue
                if splats:
                    progress(
                        f"vm: warning: the boot showed a splat again ({splats[0].title}); this guest "
                        "runs cold, saved as no snapshot, and every run on it fails as a broken guest"
                    )
                elif snap is not None:
                    saved = self._save(snap, start)
                left = max(10.0, self.boot_timeout_s - (time.monotonic() - t0))
                outcome = self._send_start(left)
            if outcome is not BootOutcome.READY:
                tail = self.console_tail()
                self.kill()
                why = outcome.value.format(timeout=f"{self.boot_timeout_s:.0f}")
                raise BootError(f"guest {kernel.name} failed to boot: {why}", self.log_path, tail)
            self.start = GuestStart(StartPath.COLD, reason, detail, snap.key if snap else "", saved)
            self._start_pump()
            return
        raise HarnessError("could not find a free port for the guest's SSH forward")

    def _save(self, snap: Snapshot, console_start: int) -> bool:
        """Save the waiting guest as the snapshot (unless another process is
        at it), then let it go on.  A failure costs the snapshot, not the guest."""
        assert self.qmp is not None
        gen: Path | None = None
        with try_file_lock(snap.lock) as mine:
            if not mine:
                progress("snapshot: another process is saving this one; not waiting for it")
                return False
            if snap.current()[0] is not None:
                return False  # saved by another process since we looked
            t0 = time.monotonic()
            progress(f"snapshot: saving the booted guest as {snap.key}")
            try:
                gen = snap.new_gen()
                stream = gen / "stream"
                self.qmp.cmd("stop")
                self.qmp.cmd("migrate", uri=snapshot.save_uri(stream))
                self.qmp.wait_migration(SAVE_TIMEOUT_S)
                self._convert(stream, gen)
                stream.unlink()
                (gen / snapshot.BASE_LOG).write_bytes(self.log_path.read_bytes()[console_start:])
                snap.commit(
                    gen,
                    {
                        "kernel": self.image.kernel.release,
                        "accel": self.accel,
                        "memory_mb": self.config.memory_mb,
                        "cpus": self.config.cpus,
                        "base_log": str(self.log_path),
                    },
                )
            except (HarnessError, OSError) as e:
                # A cache optimisation, not the run's result: the guest goes on,
                # and a full disk is named as one (QEMU says only "broken pipe").
                full = gen is not None and (snapshot.disk_was_full(gen) or getattr(e, "errno", None) in NO_SPACE)
                if gen is not None:
                    shutil.rmtree(gen, ignore_errors=True)
                    if full:  # the free space once the half-written save is gone
                        e = no_space(gen)
                progress(f"snapshot: could not save the guest ({e}); going on without one")
                return False
            finally:
                try:
                    if self.qmp.status() != "running":
                        self.qmp.cmd("cont")
                except QmpError:
                    pass  # the guest is gone: the caller sees it next
            for old in snapshot.prune():
                progress(f"snapshot: dropped the least recently used {old.name}")
            allocated = (gen / "ram").stat().st_blocks * 512 >> 20
            progress(f"snapshot: saved in {time.monotonic() - t0:.1f}s ({allocated} MiB of RAM)")
            return True

    def _convert(self, stream: Path, gen: Path) -> None:
        """Load the migration stream into a QEMU whose RAM is the file `ram`
        (shared), then save its device state alone (`state`)."""
        qmp, fd = Qmp.pair()
        argv = self.qemu_argv(port=free_port()) + snapshot.restore_args(gen / "ram", self.config.memory_mb, share=True)
        try:
            proc = subprocess.Popen(
                argv + Qmp.argv(fd),
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=die_with_parent,
            )
        finally:
            qmp.child_started()
        try:
            qmp.cmd("migrate-incoming", timeout=30, uri=snapshot.load_uri(stream))
            status = qmp.wait_status(("inmigrate",), SAVE_TIMEOUT_S)
            if status != "paused":
                raise QmpError(f"the converter QEMU left the load in state {status!r}")
            qmp.cmd("migrate-set-capabilities", capabilities=snapshot.IGNORE_SHARED)
            qmp.cmd("migrate", uri=snapshot.save_uri(gen / "state"))
            qmp.wait_migration(SAVE_TIMEOUT_S)
        except QmpError as e:
            proc.kill()
            err = proc.communicate(timeout=10)[1].decode(errors="replace").strip()
            raise QmpError(f"{e}{': ' + err.splitlines()[-1] if err else ''}") from e
        finally:
            qmp.close()
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def _send_start(self, timeout: float) -> "BootOutcome":
        """Type the start line on the waiting guest's console; wait for ready."""
        assert self.child is not None
        line = start_line(
            os.urandom(SEED_BYTES), time.time_ns(), self.config.rcu_expedited, self.config.hung_task_timeout_s
        )
        self.child.send(line + "\n")
        return self._expect(
            [(READY_MARKER, BootOutcome.READY), (START_FAILED_MARKER, BootOutcome.START_FAILED)], timeout
        )

    def _install_payload(self) -> None:
        """Unpack the image's payload (modules, modules.dep, racer) at / in the guest."""
        if self.image.payload is None:
            return
        data = self.image.payload.read_bytes()
        result = self.ssh.run("tar -xf - -C /", stdin=data, timeout=60 * self.image.kernel.time_factor)
        if not result.ok:
            raise HarnessError(
                f"could not unpack the guest's payload ({result.exit_status}): "
                f"{result.stderr.strip() or result.stdout.strip()}; console log: {self.log_path}"
            )

    def _spawn(self, extra: list[str] | None = None, note: str = "") -> None:
        _install_teardown()
        self.qmp, fd = Qmp.pair()
        argv = self.qemu_argv() + (extra or []) + Qmp.argv(fd)
        log = open(self.log_path, "ab")
        log.write(("# " + " ".join(argv) + "\n").encode())
        if note:
            log.write(f"# {note}\n".encode())
        log.flush()
        try:
            self.child = Spawn(
                argv[0],
                argv[1:],
                timeout=None,
                preexec_fn=die_with_parent,
                maxread=65536,
                searchwindowsize=8192,
                pass_fds=(fd,),
            )
        finally:
            self.qmp.child_started()
        # pexpect's courtesy pauses for interactive programs: 50 ms before every
        # send (the start line) and 100 ms after close (we SIGKILL first anyway).
        self.child.delaybeforesend = None
        self.child.delayafterclose = 0.0
        self.child.ptyproc.delayafterclose = 0.0  # type: ignore[attr-defined]
        self.child.logfile_read = log
        _LIVE.add(self)

    def _expect(self, wanted: list[tuple[str, "BootOutcome"]], timeout: float) -> "BootOutcome":
        assert self.child is not None
        pairs: list[tuple[Any, BootOutcome]] = [
            *wanted,
            (r"Kernel panic - not syncing", BootOutcome.PANIC),
            (PORT_TAKEN_TEXT, BootOutcome.PORT_TAKEN),
            (pexpect.EOF, BootOutcome.QEMU_EXITED),
            (pexpect.TIMEOUT, BootOutcome.HUNG),
        ]
        idx = self.child.expect([p for p, _ in pairs], timeout=timeout)
        outcome = pairs[idx][1]
        if outcome in (BootOutcome.READY, BootOutcome.WAITING):
            self.child.expect(r"\n", timeout=5)
        elif outcome is BootOutcome.PANIC:
            # panic=-1 and -no-reboot: QEMU exits right after the panic message;
            # read it whole so the console tail does not end mid-line.
            self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=3)
        return outcome

    def _wait_boot(self) -> "BootOutcome":
        return self._expect([(WAIT_MARKER, BootOutcome.WAITING)], self.boot_timeout_s)

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

    def wait_guest(self, condition: str, timeout: float) -> bool:
        """Wait until a shell condition holds in the guest (one SSH channel
        polling it there): a state to wait on, never a guessed sleep."""
        return self.ssh.run(f"{poll_until(condition, timeout)} || exit 1", timeout=timeout + 30).exit_status == 0

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
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
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

    # -- memory

    def dump_memory(self, path: Path) -> int:
        """The guest's memory as an ELF vmcore at `path` (QEMU's
        dump-guest-memory: the guest pauses while it is written, then goes
        on); its size in bytes.  Written whole or not at all."""
        if self.qmp is None or not self.alive():
            raise HarnessError(f"the guest is not running: no memory to dump; console log: {self.log_path}")
        tmp = path.with_name(f".{path.name}.part")
        need = self.config.memory_mb << 20
        try:
            # paging=false: physical memory as it is, which drgn and crash read
            # with the kernel's own page tables; no filter, nothing left out.
            self.qmp.cmd(
                "dump-guest-memory",
                DUMP_TIMEOUT_S * self.image.kernel.time_factor,
                paging=False,
                protocol=f"file:{tmp}",
            )
        except QmpError as e:
            tmp.unlink(missing_ok=True)
            if "No space left" in str(e) or "Disk quota" in str(e):
                raise no_space(path, need) from e
            raise HarnessError(f"QEMU could not dump the guest's memory to {path}: {e}") from e
        os.replace(tmp, path)
        return path.stat().st_size

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
