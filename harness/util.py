"""Small helpers shared by every stage: locks, tool checks, hashing."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
from pathlib import Path
from typing import Iterator

from .errors import HarnessError


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise cache writers across processes (pytest-xdist workers, CI jobs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def need_tool(tool: str, package: str) -> str:
    """Path of a host tool, or one clear line naming the package to install."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise HarnessError(f"{tool} not found; install it with: apt-get install {package}")
    return found


def hash_inputs(*parts: object) -> str:
    """A short content hash of files (by bytes) and plain values (by repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.name).encode())
            h.update(part.read_bytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
