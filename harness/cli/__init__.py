"""Command line: `python -m harness COMMAND`, every command the project and its workflows run.

The parser and the one error boundary are here; the commands are by stage:
kernel.py (kernels, fetch, build, cachekey), guest.py (run, shell), race.py
(race, survey), reports.py (nightly, matrix-page, race-page).  Every user
error ends as one line on stderr and a non-zero exit, never a traceback;
Ctrl-C and SIGTERM tear the guest down like any other exit.
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
from ..race.targets import ROWS as TARGETS
from .args import Parser, int_in, seconds_arg
from .guest import add_guest_args, cmd_run, cmd_shell
from .kernel import cmd_build, cmd_cachekey, cmd_fetch, cmd_kernels
from .race import add_ci_args, add_race_args, cmd_race, cmd_survey
from .reports import (add_matrix_page_args, add_nightly_args, add_race_page_args, cmd_matrix_page, cmd_nightly,
                      cmd_race_page)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `with Vm` tears its guest down."""


def parser() -> argparse.ArgumentParser:
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
    add_race_args(sub.add_parser("race", help="race unload against lookups/mounts and compare schemes"))
    sv = sub.add_parser("survey", help="race every ready-made target on each kernel; a table in build/survey/")
    sv.add_argument("--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH, comma list or 'all'")
    sv.add_argument("--target", default=",".join(TARGETS), help=f"comma list of {', '.join(TARGETS)} (default: all)")
    sv.add_argument("--duration", type=seconds_arg, default=10.0, metavar="S", help="seconds per target race")
    sv.add_argument("--callers", type=int_in(1, 16), default=2, metavar="N", help="callers per operation")
    sv.add_argument("--seed", type=int, default=None)
    sv.add_argument("--accel", default="auto", choices=ACCELS)
    sv.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: build/survey")
    add_ci_args(sv)
    ck = sub.add_parser("cachekey", help="print harness-SPEC-HASH, the CI cache key of a kernel's downloads and builds")
    ck.add_argument("spec", metavar="SPEC", help="a catalogue spec (not a PATH)")
    ck.add_argument("--explain", action="store_true", help="also print what the key hashes, to stderr")
    add_nightly_args(sub.add_parser("nightly", help="the nightly page: kernel jobs' matrices merged, "
                                                    "what changed since the previous night on top"))
    add_matrix_page_args(sub.add_parser("matrix-page", help="write DIR/index.html again from DIR/matrix.json"))
    add_race_page_args(sub.add_parser("race-page", help="draw a JSON report's HTML page again"))
    return ap


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # Installed here, before any guest boots, so vm.py keeps it rather than its own.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    handlers = {"kernels": cmd_kernels, "fetch": cmd_fetch, "build": cmd_build, "run": cmd_run, "shell": cmd_shell,
                "survey": cmd_survey, "cachekey": cmd_cachekey, "nightly": cmd_nightly,
                "matrix-page": cmd_matrix_page, "race-page": cmd_race_page}
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
