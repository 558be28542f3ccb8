"""Command line: `python -m harness kernels|fetch|build|run|shell|race`.

Every user error ends as one line on stderr and a non-zero exit, never a
traceback; Ctrl-C and SIGTERM tear the guest down like any other exit.  The
exit statuses are harness.exitcodes.ExitStatus.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import select
import signal
import sys
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from . import kernels
from .kernels import modbuild
from .errors import HarnessError
from .exitcodes import ExitStatus
from .guest.image import GuestExtra, build_image
from .guest.modcheck import check_module
from .guest.packages import parse_names as parse_package_names
from .guest.packages import resolve as resolve_packages
from .guest.splat import new_splats
from .guest.splat import parse as parse_splats
from .guest.ssh import CommandTimeout, command_line
from .guest.vm import ACCELS, Vm, VmConfig, qemu_binary
from .paths import build_dir, cache_dir
from .progress import progress
from .race.engine import DEFAULT_KNOBS, RaceGuest, RaceSpec, RaceStages, race
from .race.kbuild import KNOBS, Knobs
from .race.outcomes import RaceReport, exit_status, render_table
from .race.schemes import DEFAULT_SCHEMES, SCHEMES, WORKLOADS
from .race.targetrace import TargetRaceSpec, TargetStages, race_target
from .race.targets import ROWS as TARGETS

MIN_MEMORY_MB = 128  # the kernel plus the unpacked initramfs (about 15 MB) in tmpfs
MAX_CPUS = 255  # QEMU's limit for the pc machine


class GuestDied(HarnessError):
    exit_code = ExitStatus.GUEST_DIED


class RunTimedOut(HarnessError):
    exit_code = ExitStatus.TIMEOUT


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `with Vm` tears its guest down."""


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


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitStatus.BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def _int_in(low: int, high: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({bounds})")
        return value
    parse.__name__ = "number"
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _guest_file(text: str) -> GuestExtra:
    src, sep, dest = text.partition(":")
    if not sep or not src or not dest.startswith("/"):
        raise argparse.ArgumentTypeError(f"wants SRC:/ABSOLUTE/DEST, got {text!r}")
    return GuestExtra(Path(src), dest)


def _add_guest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=kernels.DEFAULT_KERNEL,
                   help=f"one of {', '.join(kernels.SPECS)}, or the PATH of a kernel build tree or installed root")
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument("--module", action="append", default=[], type=Path, metavar="PATH.ko",
                   help="extra module, installed under /lib/modules/$(uname -r)/extra; "
                        "checked before boot to be a module built for this kernel")
    p.add_argument("--file", action="append", default=[], type=_guest_file, metavar="SRC:/DEST",
                   help="extra host file to place in the guest")
    p.add_argument("--module-src", action="append", default=[], type=Path, metavar="DIR",
                   help="a kbuild module directory (Kbuild or Makefile naming obj-m), built for the kernel "
                        "in its build root and installed like --module")
    p.add_argument("--kmod", action="append", default=[], metavar="NAME",
                   help="one of the kernel's own modules (with its dependencies) to put in the guest: "
                        "--kmod minix --kmod loop")
    p.add_argument("--cpus", type=_int_in(1, MAX_CPUS), default=2)
    p.add_argument("--memory", type=_int_in(MIN_MEMORY_MB), default=1024, metavar="MIB")
    p.add_argument("--rcu-expedited", action="store_true",
                   help="set /sys/kernel/rcu_expedited=1 after boot (narrows race windows)")
    p.add_argument("--cold-boot", action="store_true", help="boot every guest instead of restoring its kernel's saved base guest (and save none)")
    _add_packages_arg(p)


def _add_packages_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guest-packages", action="append", default=[], metavar="PKG,PKG",
                   help="Debian packages (of the guest's release, with their dependencies) in the guest: "
                        "--guest-packages bash,strace,python3-minimal")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m harness", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    k = sub.add_parser("kernels", help="list kernel specs, the versions they resolve to, and the cache")
    k.add_argument("--refresh", action="store_true",
                   help="update the catalogue's Debian package lists now (otherwise at most daily)")
    f = sub.add_parser("fetch", help="download and unpack a kernel into the cache")
    f.add_argument("--kernel", default=kernels.DEFAULT_KERNEL,
                   help="spec or PATH of a kernel tree, comma list or 'all'")
    b = sub.add_parser("build", help="build a kbuild module directory for kernels; print the .ko files per kernel")
    b.add_argument("--kernel", default=kernels.DEFAULT_KERNEL,
                   help="spec or PATH of a kernel tree, comma list or 'all'")
    b.add_argument("source", type=Path, metavar="DIR", help="the module's folder: a Kbuild (or kbuild Makefile) and its sources")
    r = sub.add_parser("run", help="boot a guest, run a command over SSH, tear down")
    _add_guest_args(r)
    r.add_argument("--timings", action="store_true", help="print where the time went")
    r.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="tear the guest down and exit 124 if the command runs longer (default: no limit)")
    r.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- 'SHELL LINE' (one argument) or -- PROG ARG... (several: an exact argv)")
    s = sub.add_parser("shell", help="interactive shell in a fresh guest (or --attach to a kept one)")
    _add_guest_args(s)
    s.add_argument("--attach", type=_int_in(1, 65535), metavar="PORT",
                   help="SSH port of a guest kept by race --keep")
    add_race_args(sub.add_parser("race", help="race unload against lookups/mounts and compare schemes"))
    sv = sub.add_parser("survey", help="race every ready-made target on each kernel; a table in build/survey/")
    sv.add_argument("--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH, comma list or 'all'")
    sv.add_argument("--target", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)} (default: all)")
    sv.add_argument("--duration", type=_seconds, default=10.0, metavar="S", help="seconds per target race")
    sv.add_argument("--callers", type=_int_in(1, 16), default=2, metavar="N", help="callers per operation")
    sv.add_argument("--seed", type=int, default=None)
    sv.add_argument("--accel", default="auto", choices=ACCELS)
    sv.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: build/survey")
    _add_ci_args(sv)
    return ap


def _guest(args: argparse.Namespace, timings: Timings | None = None) -> Vm:
    """Everything checked, then the image built; the returned Vm boots on `with`."""
    qemu_binary()  # fail early and clearly when QEMU is missing
    spec = kernels.get_spec(args.kernel)
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
    return Vm(image, VmConfig(accel=args.accel, cpus=args.cpus, memory_mb=args.memory,
                              rcu_expedited=args.rcu_expedited, cold_boot=args.cold_boot))


def cmd_kernels(args: argparse.Namespace) -> int:
    rows = kernels.status(refresh=args.refresh)  # before the header: an unusable cache is one error line, nothing else
    print(f"{'spec':<11} {'suite':<13} {'release':<26} {'debian version':<22} state")
    for spec, res, state in rows:
        default = " (default)" if spec.name == kernels.DEFAULT_KERNEL else ""
        # Kernels built here are named, never part of `all`: a cold build takes minutes.
        made = f" (built here from {spec.source}; not in 'all')" if spec.source else ""
        if res is None:
            print(f"{spec.name:<11} {spec.release:<13} {'?':<26} {'?':<22} {state}")
        else:
            print(f"{spec.name:<11} {spec.release:<13} {res.abi:<26} {res.version:<22} {state}{default}{made}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    for spec in kernels.parse_specs(args.kernel):
        files = kernels.fetch(spec)
        print(f"{spec.name}: {files.release} in {files.root}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """One line per kernel on stdout: `SPEC RELEASE: KO...`; progress on stderr."""
    modbuild.source_files(args.source)
    specs = kernels.parse_specs(args.kernel)
    for i, spec in enumerate(specs, 1):
        progress(f"build {args.source} for {spec.name} ({i}/{len(specs)})")
        kfiles = kernels.fetch(spec, quiet=True)
        built = modbuild.build_dir(kfiles, args.source)
        print(f"{spec.name} {kfiles.release}: {' '.join(str(k) for k in built.ko_files)}", flush=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not argv:
        raise HarnessError("no command given: python -m harness run [options] -- CMD")
    line = command_line(argv)
    timings = Timings()
    with _guest(args, timings) as vm:
        ssh = vm.ssh
        timings.mark("boot to ssh-ready")
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
        _report_splats(vm)
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


def _report_splats(vm: Vm) -> None:
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
        res = guest.start("sh -s", stdin=script, on_stdout=lambda d: (out.write(d), out.flush()),
                          on_stderr=lambda d: (sys.stderr.buffer.write(d), sys.stderr.flush())).wait(None)
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
    if args.attach:
        from .guest.image import client_key, guest_userland, host_key
        from .guest.ssh import Guest

        key, _ = client_key()
        _, hpub = host_key(guest_userland())
        return interactive(Guest.connect("127.0.0.1", args.attach, key, hpub, timeout=5))
    with _guest(args) as vm:
        progress(f"shell: root@guest ({vm.image.kernel.release}); exit the shell to tear the guest down")
        status = interactive(vm.ssh)
        _report_splats(vm)
    print(f"console log: {vm.log_path}", file=sys.stderr)
    return status


# ---------------------------------------------------------------- race


def csv(text: str, what: str) -> tuple[str, ...]:
    """A comma list with no empty element ('6.1,' is a mistake, not 6.1)."""
    items = tuple(x.strip() for x in text.split(","))
    if not text.strip() or any(not x for x in items):
        raise HarnessError(f"--{what} {text!r} has an empty element; give a comma list without blanks")
    return items


def add_race_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=kernels.DEFAULT_KERNEL,
                   help="spec or PATH of a kernel tree, comma list or 'all' (one report per kernel)")
    p.add_argument("--target", metavar="NAME|PATH.ko|DIR",
                   help="race this module's unload instead of the harness's own schemes: a ready-made target "
                        f"({', '.join(TARGETS)}), one of the kernel's modules by name, a built .ko or a module folder")
    p.add_argument("--op", action="append", default=[], metavar="OP",
                   help="with --target: a caller operation (open:PATH[:read=N], ioctl:PATH:REQ, mount:SRC:FSTYPE[:OPTS], "
                        "socket:FAMILY:TYPE:PROTO[:ALGTYPE:ALGNAME], netdev-add:KIND, exec:CMD); one role each")
    p.add_argument("--callers", type=int, default=1, metavar="N", help="with --target: callers per --op (default 1)")
    p.add_argument("--scheme", default=None,
                   help=f"comma list of {', '.join(SCHEMES)} (default {','.join(DEFAULT_SCHEMES)})")
    p.add_argument("--workload", default=None, help=f"comma list of {', '.join(WORKLOADS)} (default lookup,mount)")
    p.add_argument("--duration", type=float, default=15.0, metavar="S", help="seconds per run")
    p.add_argument("--seed", type=int, default=None, help="default: random, printed in the report")
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                   help=f"provider parameter ({', '.join(KNOBS)}); "
                        "overrides that knob only; defaults "
                        + " ".join(DEFAULT_KNOBS.args()))
    p.add_argument("--unload-pause", type=int, default=100, metavar="MS",
                   help="how long the unloader leaves the reloaded module live (default 100)")
    p.add_argument("--providers", type=int, default=2)
    p.add_argument("--reload", default=None, choices=("finit", "modprobe"),
                   help="how the unloader reloads: finit_module of the .ko (schemes' default) or modprobe (targets')")
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument("--rcu-expedited", action="store_true")
    p.add_argument("--cold-boot", action="store_true", help="boot every guest instead of restoring its kernel's saved base guest (and save none)")
    p.add_argument("--contention", type=int, default=0, metavar="N",
                   help="N host processes spin on the CPUs while the roles run (a loaded CI runner)")
    p.add_argument("--module-src", action="append", default=[], metavar="DIR",
                   help="a kbuild module directory built for the kernel and put in every guest")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON report here")
    p.add_argument("--html", type=Path, metavar="FILE",
                   help="also write the HTML report here (index.html beside the JSON report is always written)")
    p.add_argument("--keep", action="store_true", help="leave the last guest up for a shell")
    _add_ci_args(p)
    _add_packages_arg(p)


def _add_ci_args(p: argparse.ArgumentParser) -> None:
    """Results in the kernel CI's formats (docs/ci-formats.md)."""
    p.add_argument("--kcidb", type=Path, metavar="FILE",
                   help="also write a KCIDB submission (KernelCI's results database; needs kcidb-io: pip install '.[ci]')")
    p.add_argument("--kcidb-origin", default="harness", metavar="NAME",
                   help="the KCIDB origin of every object (lower-case letters, digits, _; default harness)")
    p.add_argument("--kcidb-log-url", default=None, metavar="PREFIX",
                   help="console logs' URLs in the submission: PREFIX/NAME (default: file:// URLs of the local logs)")
    p.add_argument("--ktap", type=Path, metavar="FILE", help="also write the results as KTAP version 1")


def check_ci_outputs(args: argparse.Namespace) -> None:
    """--kcidb and --ktap refused before anything boots."""
    if args.kcidb:
        from .reports import kcidb

        check_output(args.kcidb, "--kcidb")
        kcidb.check_origin(args.kcidb_origin)
        kcidb.require_kcidb()
    if args.ktap:
        check_output(args.ktap, "--ktap")


def write_ci_outputs(args: argparse.Namespace, reports: Sequence[RaceReport]) -> None:
    if args.kcidb:
        from .reports import kcidb

        kcidb.write(kcidb.race_submission(reports, args.kcidb_origin, args.kcidb_log_url), args.kcidb)
        print(f"kcidb: {args.kcidb}", file=sys.stderr)
    if args.ktap:
        from .reports import ktap

        ktap.write(reports, args.ktap)
        print(f"ktap: {args.ktap}", file=sys.stderr)


def parse_knobs(items: Sequence[str] | None) -> Knobs:
    """The defaults, each `NAME=VALUE` overriding that knob only."""
    given: dict[str, object] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"--knob wants NAME=VALUE, got {item!r}")
        given[name.strip()] = value.strip()
    return Knobs({**DEFAULT_KNOBS, **Knobs(given)})


def check_output(path: Path, flag: str = "--json") -> None:
    """Refuse an output file that cannot be written, before anything boots."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise HarnessError(f"{flag} {path} is a folder; give a file name")
    if not parent.is_dir():
        raise HarnessError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HarnessError(f"{flag} {path}: not writable")


def target_specs_from_args(args: argparse.Namespace) -> list[TargetRaceSpec]:
    mixed = [f for f, v in (("--scheme", args.scheme), ("--workload", args.workload), ("--module-src", args.module_src),
                            ("--providers", args.providers != 2), ("--knob", args.knob)) if v]
    if mixed:
        raise HarnessError(f"--target races a module against --op callers; {', '.join(mixed)} "
                           "belong to the harness's own schemes")
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    kernel_names = [k.name for k in kernels.parse_specs(",".join(csv(args.kernel, "kernel")))]
    return [TargetRaceSpec(target=args.target, kernel=k, ops=tuple(args.op), callers=args.callers,
                           duration_s=args.duration, seed=seed, accel=args.accel, rcu_expedited=args.rcu_expedited,
                           reload=args.reload or "modprobe", unload_pause_ms=args.unload_pause,
                           contention=args.contention, cold_boot=args.cold_boot,
                           guest_packages=parse_package_names(args.guest_packages))
            for k in kernel_names]


def specs_from_args(args: argparse.Namespace) -> list[RaceSpec]:
    if args.op or args.callers != 1:
        raise HarnessError("--op and --callers go with --target (a module to race); the schemes have their workloads")
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    kernel_names = [k.name for k in kernels.parse_specs(",".join(csv(args.kernel, "kernel")))]
    return [RaceSpec(kernel=k, schemes=csv(args.scheme or ",".join(DEFAULT_SCHEMES), "scheme"),
                     workloads=csv(args.workload or "lookup,mount", "workload"),
                     duration_s=args.duration, seed=seed, knobs=parse_knobs(args.knob),
                     accel=args.accel, rcu_expedited=args.rcu_expedited, providers=args.providers,
                     reload=args.reload or "finit", unload_pause_ms=args.unload_pause, contention=args.contention,
                     cold_boot=args.cold_boot, guest_packages=parse_package_names(args.guest_packages),
                     module_src=tuple(str(Path(m).resolve()) for m in args.module_src))
            for k in kernel_names]


def cmd_race(args: argparse.Namespace, stages: Callable[[RaceSpec], RaceStages] | None = None,
             target_stages: Callable[[TargetRaceSpec], TargetStages] | None = None) -> int:
    specs: Sequence[RaceSpec | TargetRaceSpec] = target_specs_from_args(args) if args.target else specs_from_args(args)
    resolve_packages(specs[0].guest_packages)  # an unknown package is refused before anything else
    # One folder per race: the JSON report and its page (index.html) side by side.
    out = build_dir() / "reports" / f"race-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out)
    if args.json:
        check_output(args.json)
    check_ci_outputs(args)
    if args.html:
        from .reports.plots import require_plotting

        check_output(args.html, "--html")
        require_plotting()
    reports: list[RaceReport] = []
    kept: RaceGuest | None = None
    for spec in specs:
        hogs = f", {spec.contention} host CPU hogs" if spec.contention else ""
        if isinstance(spec, TargetRaceSpec):
            progress(f"race on {spec.kernel}: target {spec.target}, callers "
                     f"{' '.join(op.text for op in spec.op_rows)} x{spec.callers}, {spec.duration_s:g}s, "
                     f"seed {spec.seed}{hogs}")
            report, kept = race_target(spec, keep=args.keep and spec is specs[-1],
                                       stages=target_stages(spec) if target_stages else None)
        else:
            progress(f"race on {spec.kernel}: schemes {','.join(spec.schemes)}, workloads "
                     f"{','.join(spec.workloads)}, {spec.duration_s:g}s each, seed {spec.seed}{hogs}")
            report, kept = race(spec, keep=args.keep and spec is specs[-1],
                                stages=stages(spec) if stages else None)
        reports.append(report)
        print(render_table(report), flush=True)
    doc = [r.to_json() for r in reports]
    text = json.dumps(doc[0] if len(doc) == 1 else doc, indent=1)
    out.write_text(text)
    if args.json:
        args.json.write_text(text)
    from .reports.race_page import write_race_pages

    pages = write_race_pages(reports, [out.with_name("index.html"), *([args.html] if args.html else [])])
    print(f"report: {args.json or out}\npage: {pages[-1]}", file=sys.stderr)
    write_ci_outputs(args, reports)
    status = exit_status(reports)
    for r in reports:
        for line in r.problems():
            print(f"FAIL {r.kernel_spec}: {line}", file=sys.stderr)
    if kept is not None:
        _hold(kept)
    return int(status)


def cmd_survey(args: argparse.Namespace) -> int:
    """Every target row on every kernel; a target that cannot run on a kernel
    (not a module there, say) is a row of its own, never the end of the survey."""
    from .reports import survey

    names = csv(args.target, "target")
    for name in names:
        if name not in TARGETS:
            raise HarnessError(f"unknown target {name!r}; ready-made: {', '.join(TARGETS)}")
    specs = kernels.parse_specs(",".join(csv(args.kernel, "kernel")))
    check_ci_outputs(args)
    out = args.out or build_dir() / "survey"
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    reports: list[RaceReport] = []
    refused: list[str] = []
    for kspec in specs:
        for i, name in enumerate(names, 1):
            spec = TargetRaceSpec(target=name, kernel=kspec.name, callers=args.callers, duration_s=args.duration,
                                  seed=seed, accel=args.accel)
            progress(f"survey {kspec.name}: {name} ({i}/{len(names)})")
            try:
                report, _ = race_target(spec)
            except HarnessError as e:
                refused.append(f"{name} on {kspec.name}: {e}")
                progress(f"survey {kspec.name}: {name} not raced: {e}")
                continue
            reports.append(report)
            print(f"{kspec.name} {name}: {survey.cell(report.runs[0])}", flush=True)
    paths = survey.write(reports, out, time.strftime("%Y-%m-%d"))
    if refused:
        (out / "survey.md").write_text((out / "survey.md").read_text() + "\nNot raced:\n\n"
                                       + "".join(f"- {line}\n" for line in refused))
    print(f"survey: {paths[0]}\npage: {paths[-1]}", file=sys.stderr)
    write_ci_outputs(args, reports)
    for line in refused:
        print(f"FAIL not raced: {line}", file=sys.stderr)
    problems = [p for r in reports for p in r.problems()]
    for line in problems:
        print(f"survey: {line}", file=sys.stderr)
    return int(ExitStatus.FINDINGS if problems or refused else ExitStatus.OK)


def _hold(vm: RaceGuest) -> None:
    """--keep: leave the last guest up for a human until Ctrl-C."""
    print(f"\nguest kept at 127.0.0.1:{vm.port}\n"
          f"  shell:   python -m harness shell --attach {vm.port}\n"
          f"  console: {vm.log_path}\n"
          "press Ctrl-C here to tear it down", file=sys.stderr)
    try:
        while vm.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        vm.kill()


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # Installed here, before any guest boots, so vm.py keeps it rather than its own.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    handlers = {"kernels": cmd_kernels, "fetch": cmd_fetch, "build": cmd_build, "run": cmd_run, "shell": cmd_shell,
                "survey": cmd_survey}
    try:
        args = parser().parse_args(argv)
        if args.cmd == "race":
            return cmd_race(args)
        return handlers[args.cmd](args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt as e:
        print("interrupted; guest torn down", file=sys.stderr)
        return ExitStatus.TERMINATED if isinstance(e, Terminated) else ExitStatus.INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
