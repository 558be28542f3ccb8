"""Mistyped invocations: one line on stderr, exit 2, no traceback, no guest,
nothing written outside the cache and build folders.

QEMU is a stub on PATH that records being called: a bad-input invocation must
be refused before anything boots.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elfdata import fake_module
from tests.tools import REPO
from treedata import build_tree, guest_config

SKIP_DIRS = {".cache", "build", ".venv", ".git", "__pycache__", ".pytest_cache"}

CASES = {
    # kernels
    "kernel-unknown": ["run", "--kernel", "9.9", "--", "true"],
    "kernel-trailing-comma": ["race", "--kernel", "6.1,"],
    "kernel-only-comma": ["race", "--kernel", ","],
    "run-kernel-trailing-comma": ["run", "--kernel", "6.1,", "--", "true"],
    "fetch-kernel-comma": ["fetch", "--kernel", "6.1,,"],
    "kernel-empty": ["run", "--kernel", "", "--", "true"],
    "kernel-list-for-run": ["run", "--kernel", "6.1,6.12", "--", "true"],
    "fetch-unknown": ["fetch", "--kernel", "nope"],
    # local kernels (--kernel PATH)
    "kernel-path-missing": ["run", "--kernel", "{tmp}/no-such-tree", "--", "true"],
    "kernel-path-neither": ["run", "--kernel", "{tmp}/bin", "--", "true"],
    "kernel-tree-no-image": ["run", "--kernel", "{tmp}/tree-no-image", "--", "true"],
    "kernel-tree-no-virtio-net": ["shell", "--kernel", "{tmp}/tree-no-virtio-net"],
    "fetch-tree-no-image": ["fetch", "--kernel", "{tmp}/tree-no-image"],
    "race-list-with-a-bad-tree": ["race", "--kernel", "6.1,{tmp}/tree-no-virtio-net"],
    # guest options
    "accel": ["run", "--accel", "warp", "--", "true"],
    "cpus-0": ["run", "--cpus", "0", "--", "true"],
    "cpus-abc": ["run", "--cpus", "abc", "--", "true"],
    "memory-10": ["run", "--memory", "10", "--", "true"],
    "memory-abc": ["run", "--memory", "abc", "--", "true"],
    "file-no-colon": ["run", "--file", "{tmp}/data.txt", "--", "true"],
    "file-relative-dest": ["run", "--file", "{tmp}/data.txt:etc/data", "--", "true"],
    "file-missing-src": ["run", "--file", "{tmp}/missing.txt:/data", "--", "true"],
    "module-missing": ["run", "--module", "{tmp}/missing.ko", "--", "true"],
    "module-not-elf": ["run", "--module", "{tmp}/fake.ko", "--", "true"],
    "module-no-modinfo": ["run", "--module", "{tmp}/plain.o", "--", "true"],
    "module-wrong-vermagic": ["run", "--module", "{tmp}/wrong.ko", "--", "true"],
    "shell-module-not-elf": ["shell", "--module", "{tmp}/fake.ko"],
    "guest-packages-unknown": ["run", "--guest-packages", "bash,no-such-package-xyz", "--", "true"],
    "guest-packages-empty-element": ["run", "--guest-packages", "bash,", "--", "true"],
    "guest-packages-not-a-name": ["shell", "--guest-packages", "bash;reboot"],
    "race-guest-packages-unknown": ["race", "--guest-packages", "no-such-package-xyz"],
    # run
    "run-no-command": ["run"],
    "run-only-dashes": ["run", "--"],
    "run-timeout-0": ["run", "--timeout", "0", "--", "true"],
    "run-timeout-negative": ["run", "--timeout", "-5", "--", "true"],
    "run-timeout-abc": ["run", "--timeout", "abc", "--", "true"],
    "run-timeout-inf": ["run", "--timeout", "inf", "--", "true"],
    # shell
    "shell-attach-0": ["shell", "--attach", "0"],
    "shell-attach-abc": ["shell", "--attach", "abc"],
    # race
    "race-scheme-unknown": ["race", "--scheme", "nope"],
    "race-scheme-duplicate": ["race", "--scheme", "refcount,refcount"],
    "race-scheme-empty": ["race", "--scheme", ""],
    "race-workload-empty": ["race", "--workload", ""],
    "survey-under-empty": ["survey", "--all-modules", "--under", ""],
    "survey-under-comma": ["survey", "--all-modules", "--under", "kernel/fs,"],
    "survey-shard-empty": ["survey", "--shard", ""],
    "discover-under-empty": ["discover", "--all-modules", "--under", ""],
    "survey-resume-nothing": ["survey", "--resume", "--out", "{tmp}/no-survey"],
    "race-workload-unknown": ["race", "--workload", "fly"],
    "race-duration-0": ["race", "--duration", "0"],
    "race-duration-negative": ["race", "--duration", "-1"],
    "race-duration-huge": ["race", "--duration", "1e9"],
    "race-knob-no-value": ["race", "--knob", "exit_delay_ms"],
    "race-knob-unknown": ["race", "--knob", "bogus=1"],
    "race-knob-negative": ["race", "--knob", "exit_delay_ms=-1"],
    "race-knob-abc": ["race", "--knob", "exit_delay_ms=abc"],
    "race-providers-0": ["race", "--providers", "0"],
    "race-providers-99": ["race", "--providers", "99"],
    "race-unload-pause-negative": ["race", "--unload-pause", "-5"],
    "race-json-missing-dir": ["race", "--json", "/nonexistent-dir/x.json"],
    "race-json-is-dir": ["race", "--json", "{tmp}"],
    "race-kcidb-missing-dir": ["race", "--kcidb", "/nonexistent-dir/k.json"],
    "race-kcidb-bad-origin": ["race", "--kcidb", "k.json", "--kcidb-origin", "My-CI"],
    "race-ktap-is-dir": ["race", "--ktap", "{tmp}"],
    "survey-ktap-missing-dir": ["survey", "--ktap", "/nonexistent-dir/r.ktap"],
    # the command line itself
    "unknown-subcommand": ["frobnicate"],
    "no-subcommand": [],
    "unknown-option": ["run", "--cores", "2", "--", "true"],
    # unusable folders
    "cache-in-proc": ["kernels"],
    "build-in-proc": ["run", "--", "true"],
}
ENV = {"cache-in-proc": {"HARNESS_CACHE": "/proc/x"}, "build-in-proc": {"HARNESS_BUILD": "/proc/x"}}


def _tree() -> set[str]:
    """Every file of the repository outside the cache, build and tool folders
    (names only: other people may be editing the sources meanwhile)."""
    files = set()
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        files.update(str((Path(root) / n).relative_to(REPO)) for n in names)
    return files


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    # A --module is checked against the kernel's release, so run fetches the
    # kernel first: fetch it here, so the cases see only their own refusal.
    from harness import kernels

    kernels.fetch(kernels.get_spec(kernels.DEFAULT_KERNEL), quiet=True)
    tmp = tmp_path_factory.mktemp("bad-input")
    (tmp / "bin").mkdir()
    stub = tmp / "bin" / "qemu-system-x86_64"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp}/qemu-called\nexit 1\n')
    stub.chmod(0o755)
    (tmp / "data.txt").write_text("data\n")
    (tmp / "fake.ko").write_text("not a module\n")
    (tmp / "wrong.ko").write_bytes(fake_module("6.12.57+deb13-amd64 SMP preempt mod_unload modversions "))
    from elfdata import elf_object

    (tmp / "plain.o").write_bytes(elf_object({".text": b"\xc3"}))
    build_tree(tmp / "tree-no-image", pvh=False, bzimage=False)
    build_tree(tmp / "tree-no-virtio-net", config=guest_config(CONFIG_VIRTIO_NET=None))
    build_tree(tmp / "tree-gcc-99", config=guest_config(CONFIG_CC_VERSION_TEXT='"gcc (Debian 99.1.0-1) 99.1.0"'))
    return tmp


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_before_boot(sandbox, name):
    argv = [a.replace("{tmp}", str(sandbox)) for a in CASES[name]]
    env = dict(
        os.environ, PATH=f"{sandbox / 'bin'}:{os.environ['PATH']}", PYTHONDONTWRITEBYTECODE="1", **ENV.get(name, {})
    )
    cwd_before = sorted(p.name for p in sandbox.iterdir())
    tree_before = _tree()
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "harness", *argv], cwd=sandbox, env=env, capture_output=True, text=True, timeout=60
    )
    seconds = time.monotonic() - t0
    lines = res.stderr.splitlines()
    assert "Traceback" not in res.stderr, res.stderr
    called = sandbox / "qemu-called"
    reached_qemu = called.exists()
    called.unlink(missing_ok=True)
    assert not reached_qemu, f"reached QEMU: {res.stderr}"
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert res.returncode == 2, res.stderr
    assert seconds < 20, f"took {seconds:.1f}s: refused too late?"  # slack for a busy host
    assert sorted(p.name for p in sandbox.iterdir()) == cwd_before, "wrote into the working folder"
    assert _tree() - tree_before == set(), "wrote into the repository outside .cache/ and build/"


def test_a_tree_whose_compiler_the_host_lacks_is_refused_before_boot(sandbox):
    """Found when the race's modules are built: after the kernel's progress
    lines, still one error line, exit 2, and QEMU never started."""
    env = dict(os.environ, PATH=f"{sandbox / 'bin'}:{os.environ['PATH']}", PYTHONDONTWRITEBYTECODE="1")
    res = subprocess.run(
        [sys.executable, "-m", "harness", "race", "--kernel", str(sandbox / "tree-gcc-99"), "--scheme", "refcount"],
        cwd=sandbox,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in res.stderr and res.returncode == 2, res.stderr
    assert not (sandbox / "qemu-called").exists()
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [res.stderr.splitlines()[-1]], res.stderr
    assert "was built with gcc (Debian 99.1.0-1) 99.1.0 and this host has no gcc 99.1.0" in errors[0]
    assert errors[0].endswith("install gcc-99")


def test_there_are_at_least_30():
    assert len(CASES) >= 30
