"""The rendered C modules, and the guest's and the benchmarks' C programs
(images/*.c, bench/*.c), read like kernel code: checkpatch.pl finds no ERROR
and no WARNING (CHECK-level items are reported, not failed).

First use downloads Debian's linux-source-6.1 (about 140 MB) for checkpatch.pl
(tests/tools/checkpatch.py); later runs use the cache.  One checkpatch run covers
every scheme with 1 and 2 buses (about 8 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.race import kbuild
from tests.tools.checkpatch import IGNORED, levels, run_checkpatch

SETS = [(s, b) for s in kbuild.SCHEMES for b in kbuild.BUS_COUNTS]
ROOT = Path(__file__).resolve().parents[3]
PROGRAMS = sorted((*ROOT.glob("images/*.c"), *ROOT.glob("bench/*.c")))
# The programs run in user space: the checks that cannot apply there are off
# for them, each with the reason.
USERSPACE_IGNORED: dict[str, str] = {
    "VOLATILE": "a flag that a signal handler sets must be a volatile sig_atomic_t (C11 7.14.1.1)",
    "ENOSYS": "the racer's table of errno names names ENOSYS too; no syscall returns it here",
    "SPLIT_STRING": "usage() prints its text whole; the kernel's rule keeps log messages greppable",
    "STATIC_CONST_CHAR_ARRAY": "execve() takes char *const argv[], filled at run time (the module's name)",
}


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> dict[tuple[str, int], list[str]]:
    root = tmp_path_factory.mktemp("rendered")
    files: dict[tuple[str, int], list[Path]] = {}
    for scheme, buses in SETS:
        files[(scheme, buses)] = kbuild.render(kbuild.ModuleSetSpec(scheme, buses=buses), root / f"{scheme}-{buses}")
    lines = run_checkpatch([f for fs in files.values() for f in fs])
    return {key: [ln for ln in lines if ln.startswith(str(root / f"{key[0]}-{key[1]}") + "/")] for key in SETS}


@pytest.mark.parametrize("scheme,buses", SETS, ids=[f"{s}-{b}bus" for s, b in SETS])
def test_no_errors_or_warnings(findings, scheme, buses):
    found = levels(findings[(scheme, buses)])
    bad = found["ERROR"] + found["WARNING"]
    assert not bad, "checkpatch:\n" + "\n".join(bad)


def test_checkpatch_really_runs(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int  main( void ) {\n    return 0 ;\n}\n")
    found = levels(run_checkpatch([bad]))
    assert found["ERROR"], "checkpatch found nothing in an obviously bad file: is it running?"


def test_guest_programs_read_like_kernel_code():
    assert {p.name for p in PROGRAMS} >= {"racer.c", "seed.c", "openloop.c"}
    found = levels(run_checkpatch(PROGRAMS, ignore=(*IGNORED, *USERSPACE_IGNORED)))
    bad = found["ERROR"] + found["WARNING"]
    assert not bad, "checkpatch:\n" + "\n".join(bad)


def test_every_ignore_says_why():
    assert all(reason.strip() for reason in (*IGNORED.values(), *USERSPACE_IGNORED.values()))
