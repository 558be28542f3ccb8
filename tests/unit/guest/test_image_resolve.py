"""Symlinks in the unpacked guest packages resolve inside them, never on the host."""

import os
from pathlib import Path

from harness.guest.image import resolve_in


def test_absolute_loader_symlink_names_the_unpacked_file(tmp_path: Path) -> None:
    real = tmp_path / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    real.parent.mkdir(parents=True)
    real.write_bytes(b"the guest's loader")
    (tmp_path / "lib64").mkdir()
    link = tmp_path / "lib64/ld-linux-x86-64.so.2"
    os.symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", link)
    assert resolve_in(tmp_path, link) == real
    assert resolve_in(tmp_path, link).read_bytes() == b"the guest's loader"


def test_relative_chains_are_followed(tmp_path: Path) -> None:
    d = tmp_path / "lib/x86_64-linux-gnu"
    d.mkdir(parents=True)
    (d / "libz.so.1.2.13").write_bytes(b"z")
    os.symlink("libz.so.1.2.13", d / "libz.so.1")
    os.symlink("/lib/x86_64-linux-gnu/libz.so.1", tmp_path / "libz")
    assert resolve_in(tmp_path, tmp_path / "libz") == d / "libz.so.1.2.13"
