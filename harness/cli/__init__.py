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
from typing import Callable

from .. import kernels
from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..util import NO_SPACE, no_space
from .args import Parser, add_kernel_change_args, int_in, seconds_arg
from .guest import add_guest_args, cmd_run, cmd_shell
from .kernel import cmd_build, cmd_cache, cmd_cachekey, cmd_fetch, cmd_kernels

# Commands whose stage is a large import (race, reports: the race stage is
# about a quarter of the start-up): each keeps its name and help, and gets its
# arguments and handler only when it is the command, or when the parser is
# built whole as the tests do, so that `run` starts without importing them.
HEAVY: dict[str, str] = {
    "race": "race unload against lookups/mounts and compare schemes",
    "survey": "race every ready-made target on each kernel; a table in build/survey/",
    "discover": "load modules in a guest and print the ops that reach each one, or why none does",
    "nightly": "the nightly page: kernel jobs' matrices merged, what changed since the previous night on top",
    "matrix-page": "write DIR/index.html again from DIR/matrix.json",
    "race-page": "draw a JSON report's HTML page again",
    "export": "write a report's run as a folder that reproduces it without the harness (repro.sh)",
    "survey-merge": "one survey table from the surveys of its shards (survey --shard I/N)",
}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `with Vm` tears its guest down."""


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line; given the command about to run, only its own heavy stage is imported."""
    ap = Parser(prog="python -m harness", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    k = sub.add_parser("kernels", help="list kernel specs, the versions they resolve to, and the cache")
    k.add_argument(
        "--refresh",
        action="store_true",
        help="update the catalogue's Debian package lists now (otherwise at most daily)",
    )
    f = sub.add_parser("fetch", help="download and unpack a kernel into the cache")
    f.add_argument(
        "--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH of a kernel tree, comma list or 'all'"
    )
    add_kernel_change_args(f)
    f.add_argument(
        "--debug-info",
        action="store_true",
        help="also Debian's linux-image-RELEASE-dbg (DWARF: hundreds of MB), for vmcores and file:line frames",
    )
    b = sub.add_parser("build", help="build a kbuild module directory for kernels; print the .ko files per kernel")
    b.add_argument(
        "--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH of a kernel tree, comma list or 'all'"
    )
    add_kernel_change_args(b)
    b.add_argument(
        "source", type=Path, metavar="DIR", help="the module's folder: a Kbuild (or kbuild Makefile) and its sources"
    )
    r = sub.add_parser("run", help="boot a guest, run a command over SSH, tear down")
    add_guest_args(r)
    r.add_argument("--timings", action="store_true", help="print where the time went")
    r.add_argument(
        "--timeout",
        type=seconds_arg,
        metavar="SECONDS",
        help="tear the guest down and exit 124 if the command runs longer (default: no limit)",
    )
    r.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        help="-- 'SHELL LINE' (one argument) or -- PROG ARG... (several: an exact argv)",
    )
    s = sub.add_parser("shell", help="interactive shell in a fresh guest (or --attach to a kept one)")
    add_guest_args(s)
    s.add_argument("--attach", type=int_in(1, 65535), metavar="PORT", help="SSH port of a guest kept by race --keep")
    c = sub.add_parser("cache", help="what the cache holds by kind (size, last use); `cache prune` removes the unused")
    c.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    c.add_argument("-v", "--verbose", action="store_true", help="list every entry, not only the kinds")
    c.add_argument("--keep-days", type=float, metavar="N", help="prune: remove what has not been used for N days")
    c.add_argument("--max-size", metavar="SIZE", help="prune: then the least recently used until within SIZE (20G)")
    c.add_argument("--dry-run", action="store_true", help="prune: say what would go, remove nothing")
    ck = sub.add_parser("cachekey", help="print harness-SPEC-HASH, the CI cache key of a kernel's downloads and builds")
    ck.add_argument("spec", metavar="SPEC", help="a kernel spec of the table (not a PATH)")
    ck.add_argument("--explain", action="store_true", help="also print what the key hashes, to stderr")
    heavy = {name: sub.add_parser(name, help=text) for name, text in HEAVY.items()}
    for name, p in heavy.items():
        if command is None or command == name:
            _heavy_args(name, p)
    return ap


def _heavy_args(name: str, p: argparse.ArgumentParser) -> None:
    if name in ("race", "survey", "discover"):
        from .race import add_discover_args, add_race_args, add_survey_args

        {"race": add_race_args, "survey": add_survey_args, "discover": add_discover_args}[name](p)
        return
    from .reports import (
        add_export_args,
        add_matrix_page_args,
        add_nightly_args,
        add_race_page_args,
        add_survey_merge_args,
    )

    {
        "nightly": add_nightly_args,
        "matrix-page": add_matrix_page_args,
        "race-page": add_race_page_args,
        "export": add_export_args,
        "survey-merge": add_survey_merge_args,
    }[name](p)


def _heavy_handler(name: str) -> Callable[[argparse.Namespace], int]:
    if name in ("race", "survey", "discover"):
        from .race import cmd_discover, cmd_race, cmd_survey

        return {"race": cmd_race, "survey": cmd_survey, "discover": cmd_discover}[name]
    from .reports import cmd_export, cmd_matrix_page, cmd_nightly, cmd_race_page, cmd_survey_merge

    return {
        "nightly": cmd_nightly,
        "matrix-page": cmd_matrix_page,
        "race-page": cmd_race_page,
        "export": cmd_export,
        "survey-merge": cmd_survey_merge,
    }[name]


def _on_sigterm(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # Installed here, before any guest boots, so vm.py keeps it rather than its own.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "kernels": cmd_kernels,
        "fetch": cmd_fetch,
        "build": cmd_build,
        "run": cmd_run,
        "shell": cmd_shell,
        "cachekey": cmd_cachekey,
        "cache": cmd_cache,
    }
    argv = sys.argv[1:] if argv is None else argv
    # The first word that is no option is the command: the top level has no option taking a value.
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        args = parser(command).parse_args(argv)
        handler = handlers[args.cmd] if args.cmd in handlers else _heavy_handler(args.cmd)
        return handler(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except OSError as e:
        if e.errno not in NO_SPACE:
            raise
        # A write no `writing` block named: the file if the error knows it.
        print(f"error: {no_space(Path(e.filename)) if e.filename else e}", file=sys.stderr)
        return int(ExitStatus.BAD_INPUT)
    except KeyboardInterrupt as e:
        print("interrupted; guest torn down", file=sys.stderr)
        return ExitStatus.TERMINATED if isinstance(e, Terminated) else ExitStatus.INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
