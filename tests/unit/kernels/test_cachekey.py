"""harness.kernels.cachekey: the CI cache key of a kernel's downloads and builds (no apt)."""

import dataclasses

from harness.kernels import buildroot, table
from harness.kernels.apt import Package, ResolvedKernel, Role
from harness.kernels.cachekey import cache_key, key_inputs


def resolved(row, version="6.1.192-3", abi="6.1.0-57-amd64"):
    pkgs = (
        Package(f"linux-image-{abi}", version, "amd64", 1, "ab" * 32, Role.IMAGE),
        Package(f"linux-headers-{abi}", version, "amd64", 1, "cd" * 32, Role.HEADERS),
    )
    return ResolvedKernel(row, abi, version, pkgs)


def test_the_key_names_the_spec_and_is_stable():
    row = table.ROWS["6.1"]
    key = cache_key(row, resolved(row))
    assert key.startswith("harness-6.1-") and key == cache_key(row, resolved(row))
    assert "http" not in repr(key_inputs(row, resolved(row)))  # no archive URL: the same on any host


def test_a_new_kernel_upload_changes_the_key():
    row = table.ROWS["6.1"]
    assert cache_key(row, resolved(row)) != cache_key(row, resolved(row, "6.1.193-1", "6.1.0-58-amd64"))


def test_the_build_root_recipe_is_in_the_key(monkeypatch):
    row = table.ROWS["6.1"]
    before = cache_key(row, resolved(row))
    monkeypatch.setitem(buildroot.PACKAGES, "bookworm", buildroot.PACKAGES["bookworm"] + ("pahole",))
    assert cache_key(row, resolved(row)) != before


def test_a_source_rows_fragment_is_in_the_key(tmp_path, monkeypatch):
    row = table.ROWS["6.12-debug"]
    res = resolved(row, "6.12.118-1", "6.12.118-debug-5c1a8ac0")
    before = cache_key(row, res)
    assert key_inputs(row, res)["source"]["fragment_sha256"]
    for name, path in zip(row.fragments, row.fragment_paths):
        (tmp_path / name).write_bytes(path.read_bytes())
    monkeypatch.setattr(table, "KCONFIGS", tmp_path)
    assert cache_key(row, res) == before
    (tmp_path / row.fragments[-1]).write_bytes(row.fragment_paths[-1].read_bytes() + b"CONFIG_KCSAN=y\n")
    assert cache_key(row, res) != before
    assert cache_key(dataclasses.replace(row, fragments=(), source=None), res) != before
