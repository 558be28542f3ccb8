"""util: host tool failures as one line, and a cache lock that says whom it waits for."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness import util
from harness.errors import HarnessError
from harness.util import run_tool


def test_a_failing_tool_is_one_line_with_its_last_stderr_line_and_the_fix():
    script = "echo 'E: first problem' >&2; echo 'E: Unable to locate package foo' >&2; exit 100"
    with pytest.raises(HarnessError) as e:
        run_tool(["sh", "-c", script], what="apt-get download", fix="apt-get update")
    assert str(e.value) == "apt-get download failed: E: Unable to locate package foo (try: apt-get update)"


def test_a_tool_failing_silently_names_its_exit_status():
    with pytest.raises(HarnessError) as e:
        run_tool(["sh", "-c", "exit 3"])
    assert str(e.value) == "sh failed: exit status 3"


def test_a_tool_that_cannot_start_is_one_line_too(tmp_path):
    with pytest.raises(HarnessError) as e:
        run_tool([tmp_path / "no-such-tool"], what="dropbearkey")
    assert "\n" not in str(e.value) and str(e.value).startswith("dropbearkey failed: cannot run")


def test_bytes_output_and_unchecked_status():
    proc = run_tool(["sh", "-c", "printf 'x\\377'; echo 'bad trailer' >&2; exit 1"], text=False, check=False)
    assert proc.stdout == b"x\xff" and proc.returncode == 1
    assert util.last_line(proc.stderr) == "bad trailer"


HOLDER = """
import sys, time
from pathlib import Path
from harness.util import file_lock
with file_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_busy_lock_names_its_holder_within_two_seconds(tmp_path, monkeypatch):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        said: list[tuple[float, str]] = []
        monkeypatch.setattr(util, "progress", lambda msg: said.append((time.monotonic(), msg)))
        t0 = time.monotonic()
        with util.file_lock(lock):
            acquired = time.monotonic()
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
    assert [m for _, m in said] == [f"waiting for the lock on {lock} held by pid {holder.pid}"]
    assert said[0][0] - t0 < 2.0
    assert acquired - t0 > 1.5  # it really waited for the holder


def test_a_free_lock_says_nothing_and_records_the_pid(tmp_path, monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(util, "progress", said.append)
    lock = tmp_path / "sub" / "y.lock"
    with util.file_lock(lock):
        assert lock.read_text().strip() == str(__import__("os").getpid())
    assert said == []


@pytest.mark.parametrize(
    "text, keep, name",
    [
        # file names (the nightly check's cache keys, job labels and step logs)
        ("harness-6.1-0123abcd", "._-", "harness-6.1-0123abcd"),
        ("claims 6.12-debug", "._-", "claims_6.12-debug"),
        ("actions/cache@v4", "._-", "actions_cache_v4"),
        ("Merge and compare: ${{ x }}", "._-", "Merge_and_compare_x"),
        ("..", "._-", "_"),
        (".", "._-", "_"),
        ("", "._-", "_"),
        ("../etc", "._-", ".._etc"),
        # KCIDB id and path parts (reports/kcidb.py): no dots, never empty
        ("6.1.0-57-amd64", "_-", "6_1_0-57-amd64"),
        ("/home/u/linux", "_-", "home_u_linux"),
        ("__x__", "_-", "x"),
        ("///", "_-", "_"),
        ("rwsem-deferred", "_-", "rwsem-deferred"),
        # KTAP test names (reports/ktap.py): a kernel's path, ops and knobs stay readable
        ("/home/u/linux.refcount.lookup", "_.:/=+-", "/home/u/linux.refcount.lookup"),
        ("open:/dev/mydrv", "_.:/=+-", "open:/dev/mydrv"),
        ("mount:none:vfat", "_.:/=+-", "mount:none:vfat"),
        ("exit_delay_ms=200", "_.:/=+-", "exit_delay_ms=200"),
        ("a b # c", "_.:/=+-", "a_b_c"),  # no '#': it starts a KTAP directive
    ],
)
def test_safe_name(text, keep, name):
    assert util.safe_name(text, keep) == name
