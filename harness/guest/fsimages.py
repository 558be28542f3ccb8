"""File system images the guest's busybox cannot make (it has mkdosfs and
mke2fs), made on the host with pycdlib and carried in every base image, so
that a mount of iso9660 or udf reaches its module like vfat's does.

One row per file system: its builder and the image's path in the guest.
Each image holds one small file (`hello.txt`), so that a held mount's use
(stat and read its root) reads a real directory.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

from ..paths import cache_dir
from ..progress import progress
from ..util import cached, hash_inputs

GUEST_DIR = "/usr/share/harness/fs"
HELLO = b"hello from the harness\n"
RECIPE = 1  # bump when a builder changes


def _iso(path: Path, udf: bool = False) -> None:
    import pycdlib  # only when an image is made

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="HARNESS", udf="2.60" if udf else None)
    iso.add_fp(
        io.BytesIO(HELLO),
        len(HELLO),
        "/HELLO.TXT;1",
        rr_name="hello.txt",
        joliet_path="/hello.txt",
        udf_path="/hello.txt" if udf else None,
    )
    iso.write(str(path))
    iso.close()


BUILDERS: dict[str, Callable[[Path], None]] = {
    "iso9660": _iso,
    "udf": lambda path: _iso(path, udf=True),  # an ISO/UDF bridge: udf mounts its UDF side
}


def guest_path(fstype: str) -> str:
    return f"{GUEST_DIR}/{fstype}.img"


def image_files() -> dict[str, Path]:
    """Every image, made once and cached: its guest path -> its host path."""
    from importlib.metadata import version

    out = cache_dir() / "fsimages" / hash_inputs("fsimages", RECIPE, version("pycdlib"))
    return {guest_path(fstype): _made(out, fstype, build) for fstype, build in BUILDERS.items()}


def _made(out: Path, fstype: str, build: Callable[[Path], None]) -> Path:
    final = out / f"{fstype}.img"

    def make(tmp: Path) -> Path:
        progress(f"image: making a {fstype} image with pycdlib")
        build(tmp)
        return final

    out.mkdir(parents=True, exist_ok=True)
    return cached(
        final, out / f"{fstype}.lock", lambda: final if final.is_file() else None, make, tmp=out / f"{fstype}.tmp"
    )
