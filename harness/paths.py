"""Where the harness may write: a cache folder and a build folder, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

from .util import usable_dir

REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloads, unpacked kernels, images and module builds (content-keyed)."""
    return usable_dir(Path(os.environ.get("HARNESS_CACHE", REPO / ".cache")), "HARNESS_CACHE", "cache")


def build_dir() -> Path:
    """Console logs and reports of runs."""
    return usable_dir(Path(os.environ.get("HARNESS_BUILD", REPO / "build")), "HARNESS_BUILD", "build")
