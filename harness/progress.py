"""Progress lines for long steps, on stderr so they never mix with results."""

from __future__ import annotations

import sys
import time

_T0 = time.monotonic()
quiet = False


def progress(msg: str) -> None:
    if not quiet:
        print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)
