"""`cache` and `cache prune` on a small cache made here: sizes, last use,
what prune chooses, and what it never removes (in use, locked, keys)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cachestore as cs
from harness import cli
from harness.util import file_lock

DAY = 86400


def make(cache: Path, rel: str, size: int, age_days: float) -> Path:
    path = cache / rel
    path.mkdir(parents=True)
    f = path / "data"
    f.write_bytes(b"x" * size)
    t = time.time() - age_days * DAY
    for p in (f, path):
        os.utime(p, (t, t))
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    make(root, "kernels/old", 64 * 1024, 30)
    make(root, "kernels/new", 64 * 1024, 0)
    make(root, "snapshots/mid", 256 * 1024, 10)
    make(root, "ssh", 4096, 400)
    make(root, "apt/lists", 4096, 2)
    (root / "kernels" / "new.lock").write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(root))
    return root


def names(entries):
    return sorted(f"{e.kind.name}/{e.path.name}" for e in entries)


def test_entries_are_listed_by_kind_with_size_and_last_use(cache):
    found = cs.entries(cache)
    assert names(found) == ["apt/apt", "kernels/new", "kernels/old", "snapshots/mid", "ssh/data"]
    by = {e.path.name: e for e in found}
    assert by["old"].size >= 64 * 1024 and by["mid"].size >= 256 * 1024
    assert time.time() - by["old"].last_use == pytest.approx(30 * DAY, abs=60)
    assert by["apt"].path == cache / "apt"  # one state: never split into its parts
    text = cs.render(found, verbose=True)
    assert "kernels" in text and "  old" in text and text.splitlines()[-1].startswith("total")


def test_ssh_keys_are_listed_but_never_chosen(cache):
    make(cache, "ssh/keys", 4096, 400)
    found = cs.entries(cache)
    assert "ssh/keys" in names(found)
    assert "ssh/keys" not in names(cs.choose(found, time.time(), 0, 0))


def test_choose_by_age_then_by_size_least_recent_first(cache):
    found = cs.entries(cache)
    now = time.time()
    assert names(cs.choose(found, now, 20, None)) == ["kernels/old"]
    assert names(cs.choose(found, now, 5, None)) == ["kernels/old", "snapshots/mid"]
    # One byte too many: the least recently used goes, and that is enough.
    total = sum(e.size for e in found if e.kind.prunable)
    chosen = cs.choose(found, now, None, total - 1)
    assert names(chosen) == ["kernels/old"]
    assert names(cs.choose(found, now, None, 0)) == ["apt/apt", "kernels/new", "kernels/old", "snapshots/mid"]
    assert cs.choose(found, now, None, None) == []


def test_prune_removes_what_is_unused_and_keeps_what_a_process_holds_or_builds(cache):
    found = cs.entries(cache)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=cache / "snapshots" / "mid")
    try:
        with file_lock(cache / "kernels" / "new.lock"):
            done = cs.prune(cache, cs.choose(found, time.time(), None, 0))
    finally:
        holder.kill()
        holder.wait()
    assert names(done.removed) == ["apt/apt", "kernels/old"]
    kept = {f"{e.kind.name}/{e.path.name}": why for e, why in done.kept_in_use}
    assert kept["snapshots/mid"].startswith(f"in use by pid {holder.pid} (python")
    assert kept["kernels/new"] == "its build lock is held"
    assert not (cache / "kernels" / "old").exists() and (cache / "kernels" / "new").exists()
    assert not list(cache.glob("*/.trash-*"))


def test_a_path_that_only_shares_a_prefix_is_not_held(cache):
    make(cache, "kernels/old-2", 10, 0)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=cache / "kernels" / "old-2")
    try:
        assert list(cs.users([cache / "kernels" / "old"])) == []
        assert list(cs.users([cache / "kernels" / "old-2"])) == [cache / "kernels" / "old-2"]
    finally:
        holder.kill()
        holder.wait()


def test_dry_run_removes_nothing(cache, capsys):
    assert cli.main(["cache", "prune", "--keep-days", "20", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove kernels/old" in out and (cache / "kernels" / "old").is_dir()
    assert cli.main(["cache", "prune", "--keep-days", "20"]) == 0
    assert "removed kernels/old" in capsys.readouterr().out and not (cache / "kernels" / "old").exists()


def test_the_listing(cache, capsys):
    assert cli.main(["cache"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["kind", "entries", "size", "last", "use"]
    assert any(line.startswith("kernels ") and " 2 " in line for line in out.splitlines())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cache", "prune"], "cache prune needs --keep-days N or --max-size SIZE"),
        (["cache", "prune", "--max-size", "lots"], "--max-size wants a size such as 20G"),
        (["cache", "prune", "--keep-days", "-1"], "--keep-days must be >= 0"),
        (["cache", "--keep-days", "3"], "go with `cache prune`"),
    ],
)
def test_bad_input_is_one_line_exit_2(cache, capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(("text", "size"), [("20G", 20 * 1024**3), ("512M", 512 * 1024**2), ("0", 0), ("1.5k", 1536)])
def test_sizes(text, size):
    assert cs.parse_size(text) == size
