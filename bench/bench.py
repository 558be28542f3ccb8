"""Benchmarks (not tests): figures with min/median/max, and ratios where a
comparison is meant, because these machines are noisy.

    .venv/bin/python bench/bench.py [--kernel 6.1] [--runs 5] [--only boot,run,race]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import kernels  # noqa: E402
from harness.image import build_image  # noqa: E402
from harness.vm import Vm, VmConfig  # noqa: E402


def summary(name: str, values: list[float], unit: str = "s") -> str:
    return (f"{name:<34} median {statistics.median(values):7.2f}{unit}  "
            f"min {min(values):7.2f}{unit}  max {max(values):7.2f}{unit}  (n={len(values)})")


def bench_boot(kernel: str, runs: int) -> None:
    """Boot to SSH-ready: QEMU start until the first command has answered."""
    img = build_image(kernels.fetch(kernels.get_spec(kernel), quiet=True))
    ready, ssh_ready = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        with Vm(img, VmConfig()) as vm:
            ready.append(vm.boot_seconds)
            vm.ssh.run("true", check=True)
            ssh_ready.append(time.monotonic() - t0)
    print(summary("boot to ready marker", ready))
    print(summary("boot to SSH-ready (first command)", ssh_ready))


def bench_run(kernel: str, runs: int) -> None:
    """Warm `python -m harness run -- true`: everything cached, whole CLI."""
    cmd = [sys.executable, "-m", "harness", "run", "--kernel", kernel, "--", "true"]
    subprocess.run(cmd, check=True, capture_output=True)  # warm the caches
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.monotonic() - t0)
    print(summary("warm `run -- true`", times))


BENCHES = {"boot": bench_boot, "run": bench_run}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernel", default=kernels.DEFAULT_KERNEL)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default=",".join(BENCHES))
    args = ap.parse_args()
    for name in args.only.split(","):
        BENCHES[name](args.kernel, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
