"""Argument types and checks shared by the commands: every usage mistake is one line."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import NoReturn

from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..kernels import KernelRow


class Parser(argparse.ArgumentParser):
    """Usage mistakes are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitStatus.BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def int_in(low: int, high: int | None = None):
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


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def csv(text: str, what: str) -> tuple[str, ...]:
    """A comma list with no empty element ('6.1,' is a mistake, not 6.1)."""
    items = tuple(x.strip() for x in text.split(","))
    if not text.strip() or any(not x for x in items):
        raise HarnessError(f"--{what} {text!r} has an empty element; give a comma list without blanks")
    return items


def check_output(path: Path, flag: str = "--json") -> None:
    """Refuse an output file that cannot be written, before anything boots."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise HarnessError(f"{flag} {path} is a folder; give a file name")
    if not parent.is_dir():
        raise HarnessError(f"{flag} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise HarnessError(f"{flag} {path}: not writable")


def add_packages_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guest-packages",
        action="append",
        default=[],
        metavar="PKG,PKG",
        help="Debian packages (of the guest's release, with their dependencies) in the guest: "
        "--guest-packages bash,strace,python3-minimal",
    )


def add_kernel_change_args(p: argparse.ArgumentParser) -> None:
    """--kconfig and --patch: a kernel built here from source, changed (kernels/derive.py)."""
    p.add_argument(
        "--kconfig",
        action="append",
        default=[],
        metavar="CONFIG_X=V|FRAGMENT",
        help="a config option or a fragment file on a kernel built from source (6.12-debug, ...); repeatable",
    )
    p.add_argument(
        "--patch",
        action="append",
        default=[],
        metavar="FILE|DIR",
        help="a patch (-p1), or a folder of them (its series file, else name order), on a kernel built from source",
    )


def kernel_rows(args: argparse.Namespace, text: str | None = None) -> list[KernelRow]:
    """`--kernel` (or `text`) parsed once, each row derived by --kconfig and --patch."""
    from ..kernels import derive

    rows = derive.parse_kernels(text if text is not None else args.kernel)
    options = derive.read_options(getattr(args, "kconfig", ()))
    patches = derive.read_patches(getattr(args, "patch", ()))
    return derive.derive_all(rows, options, patches)


def kernel_row(args: argparse.Namespace) -> KernelRow:
    rows = kernel_rows(args)
    if len(rows) != 1:
        raise HarnessError(f"one kernel expected here, got {args.kernel!r}")
    return rows[0]
