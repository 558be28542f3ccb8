"""The harness installed like any pytest plugin: a wheel built from a copy of
this repository, installed into a fresh virtual environment, used from
another project's folder by `python -m harness run` and by that project's
pytest (the plugin's `vm` fixture, no conftest).  The cache is passed through,
so the kernels, images and snapshots are this checkout's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.paths import build_dir, cache_dir
from tests.tools import REPO

pytestmark = pytest.mark.vm

OTHER_TEST = """
def test_uname(vm, kernel):
    assert vm.ssh.run("uname -r", check=True).stdout.strip() == kernel.release
"""
# The data the guests below do not use: module templates and config fragments.
OTHER_DATA = """
import sys
from pathlib import Path
from harness.kernels import ROWS
from harness.race import kbuild
fragments = [p for r in ROWS.values() for p in r.fragment_paths]
print(len(kbuild.render(kbuild.ModuleSetSpec("refcount"), Path(sys.argv[1]))), all(f.is_file() for f in fragments))
"""
# What a clone has that a working tree adds: never part of a build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".cache", "build", ".venv", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
)


def _run(argv: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """The package's files, less the interpreter's bytecode caches: pytest
    rewrites every plugin's modules and caches them as __pycache__/*-pytest-*.pyc
    beside them (unless PYTHONDONTWRITEBYTECODE is set), which is pytest's doing
    for any plugin, not the harness writing into its package."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if "__pycache__" not in p.relative_to(root).parts
    }


def test_an_installed_wheel_boots_guests_from_another_project(tmp_path, kernel_spec, kernel):
    work = build_dir() / "install-test"
    shutil.rmtree(work, ignore_errors=True)
    # Not the checkout's environment: no PYTHONPATH to it, no pytest settings
    # of this session, the default build folder; pip keeps the host's settings
    # (its index, certificates) and its cache is the harness cache's.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "HARNESS_"))
        and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    }  # bytecode written, as on most hosts
    env.update(
        HARNESS_CACHE=str(cache_dir()),
        PIP_CACHE_DIR=str(cache_dir() / "pip"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
    )

    # A copy, as pip builds a git URL from a fresh clone; an in-tree build
    # would also ship whatever an earlier build left in build/lib.
    shutil.copytree(REPO, work / "src", ignore=NOT_SOURCES)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", work / "dist", work / "src"], work, env
    )
    [wheel] = (work / "dist").glob("*.whl")
    _run([sys.executable, "-m", "venv", work / "venv"], work, env)
    py = work / "venv" / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", wheel], work, env)
    site = Path(
        _run([py, "-c", "import harness, os; print(os.path.dirname(harness.__file__))"], tmp_path, env).stdout.strip()
    )
    assert site.is_relative_to(work / "venv")
    installed = _files(site)

    project = tmp_path / "other-project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_x.py").write_text(OTHER_TEST)
    defaults = _run(
        [py, "-c", "from harness import paths; print(paths.CHECKOUT, paths.default_cache())"],
        project,
        dict(env, XDG_CACHE_HOME=str(tmp_path / "xdg")),
    ).stdout.split()
    assert defaults == ["None", str(tmp_path / "xdg" / "unload-race-harness")]
    assert _run([py, "-c", OTHER_DATA, tmp_path / "rendered"], project, env).stdout.split() == ["6", "True"]

    res = _run([py, "-m", "harness", "run", "--kernel", kernel_spec.name, "--", "uname", "-r"], project, env)
    assert res.stdout == f"{kernel.release}\n", res.stderr
    res = _run([py, "-m", "pytest", "-rA", "--kernel", kernel_spec.name, "tests"], project, env)
    assert f"PASSED tests/test_x.py::test_uname[{kernel_spec.name}]" in res.stdout, res.stdout
    assert (project / "build" / "logs").is_dir()  # console logs under the current folder
    assert _files(site) == installed, "the harness wrote into its installed package"
