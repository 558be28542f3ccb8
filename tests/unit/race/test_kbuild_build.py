"""Build every scheme against real Debian headers; any compiler warning fails.

Calls fetch(), which downloads the kernel packages if they are not cached yet.
"""

from __future__ import annotations

import subprocess

import pytest

from harness.race import kbuild
from harness.race.kbuild import SCHEMES, ModuleSetSpec


@pytest.fixture(scope="module", params=["6.1", "6.12"])
def kernel(request):
    from harness.kernels import ROWS, fetch

    return fetch(ROWS[request.param])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_build_without_warnings(kernel, scheme):
    # Two buses exercise every template branch the one-bus build does, and more.
    built = kbuild.build(kernel, ModuleSetSpec(scheme, providers=2, buses=2))
    assert not built.warnings, "\n".join(built.warnings)
    assert [p.stem for p in built.ko_files] == [built.core, *built.providers]
    assert all(p.is_file() and p.stat().st_size > 0 for p in built.ko_files)
    assert built.release == kernel.release


def test_second_build_is_cached(kernel, monkeypatch):
    spec = ModuleSetSpec("refcount", providers=1)
    first = kbuild.build(kernel, spec)

    def boom(*a, **k):
        raise AssertionError("make ran again")

    monkeypatch.setattr(subprocess, "run", boom)  # any make run, wherever from
    second = kbuild.build(kernel, spec)
    assert second.cached
    assert second.ko_files == first.ko_files
    assert second.log == first.log
