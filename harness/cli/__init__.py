"""Command line: `python -m harness kernels|fetch|build|run|shell|race|survey`.

The parser and the one error boundary are here; the commands are by stage:
kernel.py (kernels, fetch, build), guest.py (run, shell), race.py (race,
survey).  Every user error ends as one line on stderr and a non-zero exit,
never a traceback; Ctrl-C and SIGTERM tear the guest down like any other exit.
The exit statuses are harness.exitcodes.ExitStatus.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from .. import kernels
from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..guest.vm import ACCELS
from .args import Parser, int_in, seconds_arg
from .guest import add_guest_args, cmd_run, cmd_shell
from .kernel import cmd_build, cmd_fetch, cmd_kernels

# Their arguments and handlers come with the race stage, the largest import of
# all: only these commands (and a parser built whole) import it.
RACE_COMMANDS = ("race", "survey")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `with Vm` tears its guest down."""


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line.  Given the command about to run, the race stage's
    commands keep their name and help but get their arguments only if they
    are that command, so that `run` starts without importing the race stage."""
    ap = Parser(prog="python -m harness", description=__doc__.split("\n")[0])
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
    add_guest_args(r)
    r.add_argument("--timings", action="store_true", help="print where the time went")
    r.add_argument("--timeout", type=seconds_arg, metavar="SECONDS",
                   help="tear the guest down and exit 124 if the command runs longer (default: no limit)")
    r.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- 'SHELL LINE' (one argument) or -- PROG ARG... (several: an exact argv)")
    s = sub.add_parser("shell", help="interactive shell in a fresh guest (or --attach to a kept one)")
    add_guest_args(s)
    s.add_argument("--attach", type=int_in(1, 65535), metavar="PORT",
                   help="SSH port of a guest kept by race --keep")
    race = sub.add_parser("race", help="race unload against lookups/mounts and compare schemes")
    sv = sub.add_parser("survey", help="race every ready-made target on each kernel; a table in build/survey/")
    if command is None or command in RACE_COMMANDS:
        _add_race_args(race, sv)
    return ap


def _add_race_args(race: argparse.ArgumentParser, sv: argparse.ArgumentParser) -> None:
    from ..race.targets import ROWS as TARGETS
    from .race import add_ci_args, add_race_args

    add_race_args(race)
    sv.add_argument("--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH, comma list or 'all'")
    sv.add_argument("--target", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)} (default: all)")
    sv.add_argument("--duration", type=seconds_arg, default=10.0, metavar="S", help="seconds per target race")
    sv.add_argument("--callers", type=int_in(1, 16), default=2, metavar="N", help="callers per operation")
    sv.add_argument("--seed", type=int, default=None)
    sv.add_argument("--accel", default="auto", choices=ACCELS)
    sv.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: build/survey")
    add_ci_args(sv)


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # Installed here, before any guest boots, so vm.py keeps it rather than its own.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    handlers = {"kernels": cmd_kernels, "fetch": cmd_fetch, "build": cmd_build, "run": cmd_run, "shell": cmd_shell}
    argv = sys.argv[1:] if argv is None else argv
    # The first word that is no option is the command: the top level has no option taking a value.
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = parser(command).parse_args(argv)
        if args.cmd in RACE_COMMANDS:
            from .race import cmd_race, cmd_survey

            handlers.update(race=cmd_race, survey=cmd_survey)
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
