"""Where the harness reads its data and where it may write: the data folders
(module templates, guest sources, config fragments), a cache folder and a
build folder, nothing else.  The same answers for a source checkout (an
editable install is one) and for an installed wheel."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import HarnessError
from .util import usable_dir

PACKAGE = Path(__file__).resolve().parent
PROJECT = "unload-race-harness"  # pyproject.toml's name: the cache folder of an installed harness
# The repository's top-level data folders.  setup.py copies them into a built
# package as harness/_data/<name>; a checkout reads its own.
DATA_DIRS = ("kmods", "images", "kconfigs")
PACKAGE_DATA = "_data"


def find_checkout(package: Path) -> Path | None:
    """The source checkout a harness package folder sits in, or None when it
    is an installed package (in site-packages, no data folders beside it)."""
    root = package.parent
    if (root / "pyproject.toml").is_file() and all((root / name).is_dir() for name in DATA_DIRS):
        return root
    return None


CHECKOUT = find_checkout(PACKAGE)


def data_dir(name: str) -> Path:
    """The data folder `name` (one of DATA_DIRS); only a path, so that modules
    can keep it as a constant (`need_data` says when it is missing)."""
    return (CHECKOUT if CHECKOUT is not None else PACKAGE / PACKAGE_DATA) / name


@functools.lru_cache(maxsize=None)
def need_data() -> None:
    """One error line instead of a FileNotFoundError deep in a build when the
    data folders are missing: a copy of harness/ without them, or a package
    built some other way than setup.py's."""
    missing = [name for name in DATA_DIRS if not data_dir(name).is_dir()]
    if missing:
        raise HarnessError(
            f"the harness's data folders are missing ({', '.join(str(data_dir(n)) for n in missing)}); "
            f"install the harness with pip from its repository or a wheel built from it"
        )


def _user_cache() -> Path:
    # The XDG base directory spec: a relative $XDG_CACHE_HOME is invalid and ignored.
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / PROJECT
    try:
        return Path.home() / ".cache" / PROJECT
    except RuntimeError:
        raise HarnessError("no home folder for the cache; point HARNESS_CACHE at a writable folder") from None


def default_cache() -> Path:
    """<checkout>/.cache in a checkout, else the user's cache folder."""
    return CHECKOUT / ".cache" if CHECKOUT is not None else _user_cache()


def default_build() -> Path:
    """<checkout>/build in a checkout, else build/ under the current folder."""
    return (CHECKOUT if CHECKOUT is not None else Path.cwd()) / "build"


def cache_dir() -> Path:
    """Downloads, unpacked kernels, images and module builds (content-keyed)."""
    env = os.environ.get("HARNESS_CACHE")
    return usable_dir(Path(env) if env else default_cache(), "HARNESS_CACHE", "cache")


def build_dir() -> Path:
    """Console logs and reports of runs."""
    env = os.environ.get("HARNESS_BUILD")
    return usable_dir(Path(env) if env else default_build(), "HARNESS_BUILD", "build")
