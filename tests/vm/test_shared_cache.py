"""Two processes, one empty cache: each artefact is downloaded or built
once, under its lock, and both guests come up (the nightly's two jobs on one
restored cache, or two pytest sessions)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_two_runs_on_an_empty_cache_build_each_artefact_once_and_both_succeed(kernel_spec, tmp_path):
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache"), "HARNESS_BUILD": str(tmp_path / "build")}
    argv = [sys.executable, "-m", "harness", "run", "--kernel", kernel_spec.name, "--"]
    procs = [
        subprocess.Popen([*argv, f"echo guest-{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=1200) for p in procs]
    for i, (p, (out, err)) in enumerate(zip(procs, outs), 1):
        assert p.returncode == 0 and out == f"guest-{i}\n", err[-3000:]
    err = "".join(e for _, e in outs)
    assert err.count(f"kernel {kernel_spec.name}: downloading linux-image") == 1, err
    assert err.count("modules into a disk for its guests") == 1, err
    assert err.count("image: building the base initramfs") == 1, err
    assert err.count("racer: building (static)") == 1, err
    assert "waiting for the lock on" in err, "the second process waited for the first one's build"
