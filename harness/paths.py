"""Where the harness may write: a cache folder and a build folder, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloads, unpacked kernels, images and module builds (content-keyed)."""
    path = Path(os.environ.get("HARNESS_CACHE", REPO / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_dir() -> Path:
    """Console logs and reports of runs."""
    path = Path(os.environ.get("HARNESS_BUILD", REPO / "build"))
    path.mkdir(parents=True, exist_ok=True)
    return path
