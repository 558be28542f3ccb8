"""What every part of the check shares: where the project, the workflow and the
check's own folders are, the one error type, progress lines, and copies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / ".github" / "workflows" / "nightly.yml"
DEBROOT = PROJECT / "scripts" / "lib" / "debroot.sh"
CACHE = Path(os.environ.get("HARNESS_CACHE", PROJECT / ".cache")) / "nightly-check"
BUILD = Path(os.environ.get("HARNESS_BUILD", PROJECT / "build")) / "nightly-check"
# Where a container job's workspace and temp folder are on GitHub's runners.
WORKSPACE = "/__w/harness/harness"
RUNNER_TEMP = "/__w/_temp"
HEARTBEAT_S = 60


class CheckError(Exception):
    """Bad input or a broken stand-in: one line, exit 2."""


def say(msg: str) -> None:
    print(f"nightly-check: {msg}", file=sys.stderr, flush=True)


def copy_tree(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        dest.mkdir(exist_ok=True)
        subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", str(dest)], check=True)
    else:
        subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)


def lines(v: Any) -> list[str]:
    return [x.strip() for x in str(v or "").splitlines() if x.strip()]


def debroot(*args: str) -> None:
    r = subprocess.run(["bash", str(DEBROOT), *args], cwd=PROJECT)
    if r.returncode != 0:
        raise CheckError(f"scripts/lib/debroot.sh {args[0]} {args[1]} failed (exit {r.returncode}; see above)")
