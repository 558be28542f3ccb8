"""A full disk: one line naming what was being written, how much it needed
and what was left; nothing half-written is published.  On a real small
tmpfs where this process may mount one, else through a write that fails
with ENOSPC as a full disk's does."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import util
from harness.errors import HarnessError
from tests.tools import REPO

SIZE = 64 * 1024


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    """A 64 KiB file system, or (not root) writes beyond 64 KiB that fail with ENOSPC."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mnt)]).returncode == 0
    )
    if not mounted:
        real = Path.write_bytes

        def write_bytes(self, data):
            if str(self).startswith(str(mnt)) and len(data) > SIZE:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
    yield mnt
    if mounted:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_report_too_big_for_the_disk_is_one_line_and_the_old_file_stays(small_disk):
    out = small_disk / "report.json"
    out.write_text("old\n")
    with pytest.raises(HarnessError) as e:
        util.write_text(out, "x" * (2 * SIZE))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"no space left on the device writing {out} (it needed 0.1 MiB, ")
    assert "free there" in msg and "cache prune" in msg
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["report.json"]  # no temporary left


def test_a_cached_artefact_that_did_not_fit_is_not_published(small_disk):
    final = small_disk / "artefact"

    def build(path: Path) -> str:
        path.write_bytes(b"y" * (2 * SIZE))
        return "built"

    with pytest.raises(HarnessError, match=f"no space left on the device writing {final}"):
        util.cached(final, small_disk / "artefact.lock", lambda: None, build, tmp=small_disk / "artefact.tmp")
    assert not final.exists() and not (small_disk / "artefact.tmp").exists()


def test_the_cli_says_it_in_one_line_exit_2(small_disk):
    if not os.path.ismount(small_disk):
        pytest.skip("needs a mount (root): the CLI runs in its own process")
    report = REPO / "tests" / "unit" / "data" / "reports-before-one-engine.json"
    page = small_disk / "page.html"
    (small_disk / "filler").write_bytes(b"z" * (SIZE - 8192))
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "race-page", str(report), str(page)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and f"no space left on the device writing {page}" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not page.exists()


@pytest.mark.parametrize(
    "said",
    [
        "tar: ./boot/vmlinuz: Cannot write: No space left on device",  # unpacking a kernel
        "Write failed because No space left on device",  # mksquashfs of the module tree
        "E: You don't have enough free space in /c/buildroots/x/var/cache/apt/archives/.",  # apt, mmdebstrap
        "cc1: fatal error: error writing to /tmp/ccX.s: Disk quota exceeded",
    ],
)
def test_a_tool_that_failed_on_a_full_disk_is_the_full_disk_line(said, tmp_path):
    proc = subprocess.CompletedProcess(["tool"], 1, stdout="", stderr=f"progress\n{said}\nsummary: failed\n")
    err = util.tool_out_of_space("making X", proc, tmp_path)
    assert err is not None
    assert str(err).startswith(f"no space left on the device under {tmp_path}: making X failed: {said.strip()}")


def test_a_tool_that_failed_otherwise_is_not_called_a_full_disk():
    proc = subprocess.CompletedProcess(["tool"], 1, stdout="", stderr="E: Unable to locate package nosuch\n")
    assert util.tool_out_of_space("making X", proc) is None
