"""Benchmarks (not tests): figures with min/median/max, and ratios where a
comparison is meant, because these machines are noisy.

    .venv/bin/python bench/bench.py [--kernel 6.1] [--runs 5] [--only boot,run,looker,spurious,ops]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import kernels  # noqa: E402
from harness.guest.image import GuestExtra, build_image  # noqa: E402
from harness.guest.programs import build_static  # noqa: E402
from harness.guest.vm import Vm, VmConfig  # noqa: E402


def summary(name: str, values: list[float], unit: str = "s") -> str:
    return (
        f"{name:<34} median {statistics.median(values):7.2f}{unit}  "
        f"min {min(values):7.2f}{unit}  max {max(values):7.2f}{unit}  (n={len(values)})"
    )


def _time_guest(img, config: VmConfig) -> tuple[float, float, str]:
    """(seconds to the ready marker, to SSH-ready = first command answered, start path)."""
    t0 = time.monotonic()
    with Vm(img, config) as vm:
        ready = time.monotonic() - t0
        vm.ssh.run("true", check=True)
        return ready, time.monotonic() - t0, vm.start.path.name.lower() if vm.start else "?"


def bench_boot(kernel: str, runs: int) -> None:
    """Cold boot vs restore from the kernel's snapshot, to the ready marker and
    to SSH-ready (QEMU start until the first command has answered)."""
    img = build_image(kernels.fetch(kernels.get_spec(kernel), quiet=True))
    _time_guest(img, VmConfig())  # makes the snapshot if the cache has none
    figures: dict[str, list[float]] = {}
    for _ in range(runs):  # interleaved, so that machine noise hits both alike
        for label, config in (("cold", VmConfig(cold_boot=True)), ("restored", VmConfig())):
            ready, ssh_ready, path = _time_guest(img, config)
            assert path == label, f"a {label} guest started {path}"
            figures.setdefault(f"{label}: to ready marker", []).append(ready)
            figures.setdefault(f"{label}: to SSH-ready", []).append(ssh_ready)
    for name, values in figures.items():
        print(summary(name, values))
    cold, restored = figures["cold: to SSH-ready"], figures["restored: to SSH-ready"]
    print(summary("SSH-ready cold/restored ratio", [c / r for c, r in zip(cold, restored)], unit="x"))


def bench_run(kernel: str, runs: int) -> None:
    """Warm `python -m harness run -- true`: everything cached, whole CLI,
    restored (the default) and with --cold-boot."""
    cmd = [sys.executable, "-m", "harness", "run", "--kernel", kernel, "--", "true"]
    subprocess.run(cmd, check=True, capture_output=True)  # warm the caches
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        for label, extra in (("restored", []), ("cold", ["--cold-boot"])):
            t0 = time.monotonic()
            subprocess.run(cmd[:-2] + extra + cmd[-2:], check=True, capture_output=True)
            times.setdefault(label, []).append(time.monotonic() - t0)
    for label, values in times.items():
        print(summary(f"warm `run -- true` ({label})", values))


def _race_guest(kernel: str, scheme: str):
    from harness.race.engine import RaceSpec
    from harness.race.kbuild import ModuleSetSpec, build
    from harness.race.schemerace import prepare_guest

    kf = kernels.fetch(kernels.get_spec(kernel), quiet=True)
    mods = build(kf, ModuleSetSpec(scheme))
    img = build_image(kf, tuple(mods.ko_files))
    vm = Vm(img, VmConfig(), name=f"bench-{scheme}")
    vm.boot()
    spec = RaceSpec(kernel=kernel, schemes=(scheme,), workloads=("lookup",))
    prepare_guest(vm, mods, spec)
    return vm, mods, spec


def bench_looker(kernel: str, runs: int) -> None:
    """Looker ops/s started the harness's way (SSH channel, barrier, progress)
    vs the same racer loop started by hand in the guest; plus one SSH exec per
    lookup, to show why the loop lives in the guest."""
    from harness.race.racer import RoleSpec, parse_role_output

    vm, mods, _ = _race_guest(kernel, "refcount")
    looker = RoleSpec("looker", name=mods.spec.provider_names[0], ctl=mods.spec.ctl_device, duration_ms=3000)
    base = looker.command()
    raced = dataclasses.replace(looker, barrier="/dev/shm/b", parties=1, progress=True).command()
    ratios = []
    with vm:
        for _ in range(runs):
            vm.ssh.run("rm -f /dev/shm/b", check=True)
            chan = vm.ssh.start(raced, on_stderr=lambda d: None)
            harness_res = parse_role_output(chan.wait(60).stdout)
            direct = vm.ssh.run(f"sh -c {shlex.quote(base + ' > /tmp/direct.json')}; cat /tmp/direct.json", check=True)
            direct_res = parse_role_output(direct.stdout)
            h = harness_res.iterations / (harness_res.duration_ms / 1000)
            d = direct_res.iterations / (direct_res.duration_ms / 1000)
            ratios.append(h / d)
        n, t0 = 20, time.monotonic()
        for _ in range(n):
            vm.ssh.run(f"printf 'lookup-call {mods.spec.provider_names[0]}' > {mods.spec.ctl_device}", check=True)
        per_exec = n / (time.monotonic() - t0)
    print(f"looker ops/s: harness {h:,.0f}, direct {d:,.0f} (last run)")
    print(summary("looker harness/direct ratio (goal>=0.9)", ratios, unit=""))
    print(f"one SSH exec per lookup: {per_exec:.1f} ops/s ({d / per_exec:,.0f}x slower than the racer)")


def bench_first_spurious(kernel: str, runs: int) -> None:
    """Seconds until the first spurious refcount failure (mount race, default
    knobs), over `2 * runs` races in one guest (goal: <= 10 s in every run)."""
    from harness.race.schemerace import run_one

    vm, mods, spec = _race_guest(kernel, "refcount")
    spec = type(spec)(kernel=kernel, schemes=("refcount",), workloads=("mount",), duration_s=15)
    firsts = []
    with vm:
        for _ in range(2 * runs):
            run = run_one(vm, mods, spec, "refcount", "mount", vm.image.kernel.release)
            firsts.append(run.first_spurious_s if run.first_spurious_s is not None else float("inf"))
    within = sum(f <= 10 for f in firsts)
    print(summary("first spurious refcount failure", firsts))
    print(f"runs with a spurious failure within 10 s: {within}/{len(firsts)}")


OPENLOOP = "/bin/openloop"


def bench_open_op(kernel: str, runs: int, seconds: float = 1.0) -> None:
    """The racer's generic `open` op (open + close of /dev/null, timed and
    counted per call) against the same two syscalls in a hand-written static
    C loop (bench/openloop.c, stopped by a timer: it reads no clock), each for
    the same time in the same guest, in turn (the order flips every round),
    4 * `runs` rounds: short rounds side by side, because the host's load
    moves both by 10 % and more from one second to the next.  Goal: the
    racer keeps >= 90 % of the hand loop's calls per second."""
    from harness.race.ops import parse
    from harness.race.racer import parse_role_output

    kf = kernels.fetch(kernels.get_spec(kernel), quiet=True)
    loop = build_static(Path(__file__).resolve().parent / "openloop.c", "bench-openloop")
    img = build_image(kf, (), (GuestExtra(loop, OPENLOOP),))
    ms = int(seconds * 1000)
    racer_cmd = parse("open:/dev/null").role_spec(name="bench", duration_ms=ms).command()
    hand_cmd = f"{OPENLOOP} /dev/null {ms}"

    def racer(vm: Vm) -> float:
        res = parse_role_output(vm.ssh.run(racer_cmd, check=True, timeout=120).stdout)
        op = res.ops["open"]
        assert res.error is None and op.ok == op.total > 0, res
        return op.total / (res.duration_ms / 1000)

    def hand(vm: Vm) -> float:
        doc = json.loads(vm.ssh.run(hand_cmd, check=True, timeout=120).stdout)
        assert doc["failed"] == 0 and doc["calls"] > 0, doc
        return doc["calls"] / (doc["elapsed_ms"] / 1000)

    figures: dict[str, list[float]] = {"racer": [], "hand": []}
    with Vm(img, VmConfig(), name="bench-ops") as vm:
        hand(vm), racer(vm)  # warm up: page cache, TCG's translations
        for i in range(4 * runs):
            for label, fn in (("racer", racer), ("hand", hand)) if i % 2 else (("hand", hand), ("racer", racer)):
                figures[label].append(fn(vm))
    for label, values in figures.items():
        print(summary(f"open+close /dev/null, {label} (kops/s)", [v / 1000 for v in values], unit=""))
    ratios = [r / h for r, h in zip(figures["racer"], figures["hand"])]
    print(summary("racer/hand ratio (goal>=0.9)", ratios, unit=""))
    print(f"racer/hand over all rounds: {sum(figures['racer']) / sum(figures['hand']):.3f}")


BENCHES = {
    "boot": bench_boot,
    "run": bench_run,
    "looker": bench_looker,
    "spurious": bench_first_spurious,
    "ops": bench_open_op,
}


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
