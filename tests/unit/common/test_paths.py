"""Where the data, cache and build folders are, from a checkout and from an
installed package; an unusable cache or build folder is one line naming the
variable and the fix."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from harness import paths
from harness.errors import HarnessError
from tests.tools import REPO


@pytest.mark.parametrize("var, func", [("HARNESS_CACHE", paths.cache_dir), ("HARNESS_BUILD", paths.build_dir)])
def test_a_folder_that_cannot_be_made_is_a_harness_error(monkeypatch, var, func):
    monkeypatch.setenv(var, "/proc/x")
    with pytest.raises(HarnessError) as e:
        func()
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot use {var}=/proc/x as the ") and f"point {var} at a writable folder" in msg


def test_a_file_in_the_way_is_a_harness_error(monkeypatch, tmp_path):
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "f" / "cache"))
    with pytest.raises(HarnessError, match="Not a directory"):
        paths.cache_dir()


def test_a_usable_folder_is_made(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "a" / "b"))
    assert paths.build_dir() == tmp_path / "a" / "b" and (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("argv", [["kernels"], ["fetch", "--kernel", "6.1"]])
def test_the_cli_prints_one_error_line_and_exits_2(argv):
    env = dict(os.environ, HARNESS_CACHE="/proc/x")
    res = subprocess.run(
        [sys.executable, "-m", "harness", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [res.stderr.strip()] and res.stderr.startswith(
        "error: cannot use HARNESS_CACHE=/proc/x"
    )


# ---------------------------------------------------------------- checkout or installed


def _checkout(root):
    for name in paths.DATA_DIRS:
        (root / name).mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "harness").mkdir()
    return root


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """paths as an installed package sees them: harness/ in a site-packages
    folder, its data under harness/_data, HOME and the current folder elsewhere."""
    package = tmp_path / "site-packages" / "harness"
    for name in paths.DATA_DIRS:
        (package / paths.PACKAGE_DATA / name).mkdir(parents=True)
    monkeypatch.setattr(paths, "PACKAGE", package)
    monkeypatch.setattr(paths, "CHECKOUT", paths.find_checkout(package))
    for var in ("HARNESS_CACHE", "HARNESS_BUILD", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    paths.need_data.cache_clear()
    yield package
    paths.need_data.cache_clear()


def test_these_tests_run_from_a_checkout_whose_data_folders_are_its_own():
    assert paths.CHECKOUT == REPO  # an editable install counts as the checkout
    assert [paths.data_dir(n) for n in paths.DATA_DIRS] == [REPO / n for n in paths.DATA_DIRS]
    assert paths.default_cache() == REPO / ".cache" and paths.default_build() == REPO / "build"


def test_a_checkout_needs_its_pyproject_and_every_data_folder(tmp_path):
    root = _checkout(tmp_path / "repo")
    assert paths.find_checkout(root / "harness") == root
    (root / "kconfigs").rmdir()
    assert paths.find_checkout(root / "harness") is None
    assert paths.find_checkout(_checkout(tmp_path / "other") / "harness") == tmp_path / "other"
    (tmp_path / "other" / "pyproject.toml").unlink()
    assert paths.find_checkout(tmp_path / "other" / "harness") is None


def test_an_installed_package_reads_the_data_inside_itself(installed):
    assert paths.CHECKOUT is None
    assert paths.data_dir("images") == installed / "_data" / "images"
    paths.need_data()


def test_an_installed_package_without_its_data_is_one_error_line(installed):
    (installed / "_data" / "kmods").rmdir()
    with pytest.raises(HarnessError) as e:
        paths.need_data()
    msg = str(e.value)
    assert "\n" not in msg and str(installed / "_data" / "kmods") in msg and "images" not in msg


def test_installed_the_cache_is_the_users_and_the_build_folder_the_current_one(installed, tmp_path):
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "unload-race-harness"
    assert paths.build_dir() == tmp_path / "elsewhere" / "build"
    assert not (installed / ".cache").exists() and not (installed.parent / "build").exists()


def test_installed_the_cache_follows_xdg_cache_home(installed, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "unload-race-harness"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")  # invalid by the spec: ignored
    assert paths.default_cache() == tmp_path / "home" / ".cache" / "unload-race-harness"
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    assert paths.default_cache() == tmp_path / "home" / ".cache" / "unload-race-harness"


def test_installed_without_a_home_folder_the_cache_is_one_error_line(installed, monkeypatch):
    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(paths.Path, "home", staticmethod(no_home))
    with pytest.raises(HarnessError, match=r"^no home folder for the cache; point HARNESS_CACHE at a writable folder$"):
        paths.cache_dir()


@pytest.mark.parametrize("where", ["checkout", "installed"])
def test_the_environment_overrides_both_defaults(request, monkeypatch, tmp_path, where):
    if where == "installed":
        request.getfixturevalue("installed")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "b"))
    assert paths.cache_dir() == tmp_path / "c" and paths.build_dir() == tmp_path / "b"
    assert not (tmp_path / "xdg").exists()


def test_setup_py_copies_the_folders_paths_reads():
    """setup.py cannot import the harness, so it repeats the two names; an
    sdist carries the folders (MANIFEST.in) for the wheel built from it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    names = {
        t.id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name) and t.id in ("DATA_DIRS", "PACKAGE_DATA")
    }
    assert names == {"DATA_DIRS": paths.DATA_DIRS, "PACKAGE_DATA": paths.PACKAGE_DATA}
    grafted = [line.split()[1] for line in (REPO / "MANIFEST.in").read_text().splitlines() if line.startswith("graft ")]
    assert sorted(grafted) == sorted(paths.DATA_DIRS)
