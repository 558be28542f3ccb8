"""The command line, `python -m nightlycheck`: exit 0 when every check held,
1 if one did not, 2 on bad input, 130 when interrupted."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from . import __doc__ as package_doc
from .check import Check
from .common import CheckError


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nightlycheck", description=(package_doc or "").split("\n\n")[0])
    p.add_argument("--kernel", default="6.1", help="one kernel of the nightly matrix (default 6.1)")
    p.add_argument("--cold", action="store_true", help="forget the kept caches first: night 1 starts empty")
    return p


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parser().parse_args(argv)
    if os.geteuid() != 0:
        print("nightly-check: error: needs root (mmdebstrap, chroot); run it as root", file=sys.stderr)
        return 2
    try:
        return Check(args.kernel, args.cold).main()
    except CheckError as e:
        print(f"nightly-check: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nightly-check: interrupted", file=sys.stderr)
        return 130
