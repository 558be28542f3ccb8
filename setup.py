"""The one build step pyproject.toml cannot declare: the data folders go into
the package (everything else about the build is in pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# harness/paths.py's two names (the build does not import the harness; a unit test compares them).
DATA_DIRS = ("kmods", "images", "kconfigs")
PACKAGE_DATA = "_data"


class BuildPyWithData(build_py):
    """build_py, then a copy of the top-level kmods/, images/ and kconfigs/ into
    the built package as harness/_data/<name>.

    Why a copy at build time: the folders stay at the top of the repository,
    where the project, its docs and its tests have them, and no symlinks or
    duplicates are kept in git; an installed harness finds the copy inside
    itself (harness/paths.py).  An editable install copies nothing: it runs
    from the checkout and reads the checkout's folders."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DATA_DIRS:
            dest = Path(self.build_lib, "harness", PACKAGE_DATA, name)
            shutil.rmtree(dest, ignore_errors=True)  # an in-tree build/lib keeps files a repository no longer has
            shutil.copytree(HERE / name, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithData})
