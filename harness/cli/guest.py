"""`run` and `shell`: a guest booted (or restored) for one command or a human."""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from .. import kernels
from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..guest import gdb
from ..guest.gdb import GdbSetup
from ..guest.image import GuestExtra, build_image
from ..guest.modcheck import check_module
from ..guest.packages import resolve as resolve_packages
from ..guest.splat import new_splats
from ..guest.splat import parse as parse_splats
from ..guest.ssh import CommandTimeout, command_line
from ..guest.vm import ACCELS, Vm, VmConfig, qemu_binary
from ..kernels import modbuild
from ..paths import build_dir, cache_dir
from ..progress import progress
from ..util import need_tool
from .args import add_kernel_change_args, add_packages_arg, int_in, kernel_row

MIN_MEMORY_MB = 128  # the kernel plus the unpacked initramfs (about 15 MB) in tmpfs
MAX_CPUS = 255  # QEMU's limit for the pc machine


class GuestDied(HarnessError):
    exit_code = ExitStatus.GUEST_DIED


class RunTimedOut(HarnessError):
    exit_code = ExitStatus.TIMEOUT


@dataclass
class Timings:
    """Where a command's wall time went, for --timings."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    _t: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self.steps.append((name, now - self._t))
        self._t = now

    def render(self) -> str:
        total = sum(s for _, s in self.steps)
        rows = [f"  {name:<18} {secs:7.2f}s" for name, secs in self.steps]
        return "timings:\n" + "\n".join(rows) + f"\n  {'total':<18} {total:7.2f}s"


def guest_file(text: str) -> GuestExtra:
    src, sep, dest = text.partition(":")
    if not sep or not src or not dest.startswith("/"):
        raise argparse.ArgumentTypeError(f"wants SRC:/ABSOLUTE/DEST, got {text!r}")
    return GuestExtra(Path(src), dest)


def add_guest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel",
        default=kernels.DEFAULT_KERNEL,
        help=f"one of {', '.join(kernels.ROWS)}, or the PATH of a kernel build tree or installed root",
    )
    add_kernel_change_args(p)
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument(
        "--module",
        action="append",
        default=[],
        type=Path,
        metavar="PATH.ko",
        help="extra module, installed under /lib/modules/$(uname -r)/extra; "
        "checked before boot to be a module built for this kernel",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        type=guest_file,
        metavar="SRC:/DEST",
        help="extra host file to place in the guest",
    )
    p.add_argument(
        "--module-src",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a kbuild module directory (Kbuild or Makefile naming obj-m), built for the kernel "
        "in its build root and installed like --module",
    )
    p.add_argument(
        "--kmod",
        action="append",
        default=[],
        metavar="NAME",
        help="one of the kernel's own modules (with its dependencies) to put in the guest: --kmod minix --kmod loop",
    )
    p.add_argument("--cpus", type=int_in(1, MAX_CPUS), default=2)
    p.add_argument("--memory", type=int_in(MIN_MEMORY_MB), default=1024, metavar="MIB")
    p.add_argument(
        "--rcu-expedited", action="store_true", help="set /sys/kernel/rcu_expedited=1 after boot (narrows race windows)"
    )
    p.add_argument(
        "--cold-boot",
        action="store_true",
        help="boot every guest instead of restoring its kernel's saved base guest (and save none)",
    )
    p.add_argument(
        "--gdb",
        action="store_true",
        help="start the guest's gdb stub on a free local port and print the gdb command that loads the kernel's "
        "symbols and the loaded modules' at their addresses, then connects",
    )
    add_packages_arg(p)


def start_gdb(vm: object) -> GdbSetup:
    """The gdb stub of a guest this process runs, and one line saying how to attach."""
    if not isinstance(vm, Vm):
        raise HarnessError("--gdb: the guest is not one this process started")
    setup = gdb.start(vm)
    progress(f"gdb: stub on 127.0.0.1:{setup.port}; attach with: {setup.command}")
    return setup


def _guest(args: argparse.Namespace, timings: Timings | None = None) -> Vm:
    """Everything checked, then the image built; the returned Vm boots on `with`."""
    qemu_binary()  # fail early and clearly when QEMU is missing
    spec = kernel_row(args)
    cache_dir(), build_dir()  # unusable folders are bad input, found before the image is built
    for extra in args.file:
        if not extra.src.is_file():
            raise HarnessError(f"--file {extra.src}:{extra.dest}: {extra.src} is not a file")
    for module in args.module:
        if not module.is_file():
            raise HarnessError(f"--module {module}: no such file")
    for src in args.module_src:
        modbuild.source_files(src)  # a folder that is no module is bad input before any fetch
    packages = resolve_packages(args.guest_packages).asked  # an unknown one is refused before the kernel is fetched
    kfiles = kernels.fetch(spec, quiet=True)
    for module in args.module:
        check_module(module, kfiles.release)
    if timings:
        timings.mark("fetch")
    built = [ko for src in args.module_src for ko in modbuild.build_dir(kfiles, src).ko_files]
    if timings and args.module_src:
        timings.mark("module build")
    image = build_image(kfiles, (*args.module, *built), tuple(args.file), tuple(args.kmod), packages)
    if timings:
        timings.mark("image")
    return Vm(
        image,
        VmConfig(
            accel=args.accel,
            cpus=args.cpus,
            memory_mb=args.memory,
            rcu_expedited=args.rcu_expedited,
            cold_boot=args.cold_boot,
        ),
    )


def cmd_run(args: argparse.Namespace) -> int:
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise HarnessError("no command given: python -m harness run [options] -- CMD")
    line = command_line(argv)
    timings = Timings()
    with _guest(args, timings) as vm:
        ssh = vm.ssh
        timings.mark("boot to ssh-ready")
        if args.gdb:
            start_gdb(vm)
        out, err = sys.stdout.buffer, sys.stderr.buffer

        def emit(stream):
            def write(data: bytes) -> None:
                stream.write(data)
                stream.flush()

            return write

        try:
            res = ssh.start(line, on_stdout=emit(out), on_stderr=emit(err)).wait(args.timeout)
        except CommandTimeout:
            raise RunTimedOut(f"the command did not finish within {args.timeout:g} s; guest torn down") from None
        timings.mark("command")
        if res.exit_status < 0:
            raise GuestDied(f"the guest died during the command ({_death_cause(vm)}); console log: {vm.log_path}")
        report_splats(vm)
    if args.timings:
        print(timings.render(), file=sys.stderr)
    return res.exit_status


def _death_cause(vm: Vm) -> str:
    """What the console says killed the guest, for the one-line error."""
    deadline = time.monotonic() + 2  # QEMU exits a moment after the connection drops
    while vm.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    splats = parse_splats(vm.console_text())
    fatal = [s for s in splats if s.panicked] or splats
    if fatal:
        return f"{fatal[-1].kind}: {fatal[-1].title}"
    return "SSH connection lost, QEMU still running" if vm.alive() else "QEMU exited"


def report_splats(vm: Vm) -> None:
    for s in vm.boot_splats:
        print(f"boot: {s.kind}: {s.title} (the guest was broken before the command began)", file=sys.stderr)
    splats = new_splats(vm.console_text(), vm.ready_offset)
    for s in splats:
        print(f"console: {s.kind}: {s.title}", file=sys.stderr)
    if splats or vm.boot_splats:
        print(f"console log: {vm.log_path}", file=sys.stderr)


def interactive(guest) -> int:
    """A raw-terminal shell on one SSH channel; piped input runs as a script."""
    if not sys.stdin.isatty():
        script = sys.stdin.buffer.read()
        out = sys.stdout.buffer
        res = guest.start(
            "sh -s",
            stdin=script,
            on_stdout=lambda d: (out.write(d), out.flush()),
            on_stderr=lambda d: (sys.stderr.buffer.write(d), sys.stderr.flush()),
        ).wait(None)
        return res.exit_status
    chan = guest.client.get_transport().open_session()
    size = os.get_terminal_size() if sys.stdin.isatty() else os.terminal_size((80, 24))
    chan.get_pty(term=os.environ.get("TERM", "vt100"), width=size.columns, height=size.lines)
    chan.invoke_shell()
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    try:
        if old:
            tty.setraw(fd)
        while not chan.exit_status_ready():
            ready, _, _ = select.select([chan, fd], [], [], 0.5)
            if chan in ready:
                data = chan.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 4096)
                if not data:
                    break
                chan.sendall(data)
    finally:
        if old:
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
    return chan.recv_exit_status() if chan.exit_status_ready() else 0


def cmd_shell(args: argparse.Namespace) -> int:
    if args.attach and args.gdb:
        raise HarnessError(
            "--gdb cannot join a guest by its SSH port: start it with the guest (shell --gdb, run --gdb, race --keep --gdb)"
        )
    if args.gdb:
        need_tool("gdb", "gdb")
    if args.attach:
        from ..guest.image import client_key, guest_userland, host_key
        from ..guest.ssh import Guest

        key, _ = client_key()
        _, hpub = host_key(guest_userland())
        return interactive(Guest.connect("127.0.0.1", args.attach, key, hpub, timeout=5))
    with _guest(args) as vm:
        if args.gdb:
            start_gdb(vm)
        progress(f"shell: root@guest ({vm.image.kernel.release}); exit the shell to tear the guest down")
        status = interactive(vm.ssh)
        report_splats(vm)
    print(f"console log: {vm.log_path}", file=sys.stderr)
    return status
