"""The race engine: one fresh guest per scheme, roles started together over
SSH channels, their JSON joined with the console's splats of the same interval.

A crashed or hung guest is a result, not a harness failure.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import kernels
from .errors import HarnessError
from .image import GuestExtra, build_image
from .kbuild import SCHEMES, BuiltModules, ModuleSetSpec, build, validate_knobs
from .paths import build_dir
from .progress import progress
from .report import RaceReport, RunResult, render_table, summarise_run
from .splat import new_splats
from .vm import ACCELS, Vm, VmConfig

WORKLOADS = ("lookup", "mount", "fsmount", "all")
# exit_delay_ms widens the "being removed" window; call_delay_us makes a caller
# sleep inside the provider, which is what the unsafe scheme cannot survive.
DEFAULT_KNOBS = (("call_delay_us", 1000), ("exit_delay_ms", 200))
RACER = "/bin/racer"
BARRIER = "/dev/shm/harness-race.barrier"


@dataclass(frozen=True)
class RaceSpec:
    """Everything that defines a run; `repro()` turns it back into a command."""

    kernel: str = kernels.DEFAULT_KERNEL
    schemes: tuple[str, ...] = ("refcount", "rwsem", "rwsem-deferred", "unsafe")
    workloads: tuple[str, ...] = ("lookup", "mount")
    duration_s: float = 15.0
    seed: int = 1
    knobs: tuple[tuple[str, int], ...] = DEFAULT_KNOBS
    accel: str = "auto"
    rcu_expedited: bool = False
    providers: int = 2
    reload: str = "finit"  # how the unloader reloads: finit_module or modprobe
    unload_pause_ms: int = 100  # the reloaded module stays live this long

    def __post_init__(self) -> None:
        kernels.get_spec(self.kernel)
        for s in self.schemes:
            if s not in SCHEMES:
                raise HarnessError(f"unknown scheme {s!r}; valid: {', '.join(SCHEMES)}")
        for w in self.workloads:
            if w not in WORKLOADS:
                raise HarnessError(f"unknown workload {w!r}; valid: {', '.join(WORKLOADS)}")
        if not self.schemes or not self.workloads:
            raise HarnessError("at least one scheme and one workload are needed")
        if not 0 < self.duration_s <= 3600:
            raise HarnessError(f"--duration must be in (0, 3600] seconds, got {self.duration_s}")
        if not 0 <= self.unload_pause_ms <= 60000:
            raise HarnessError("--unload-pause must be 0..60000 ms")
        if self.reload not in ("finit", "modprobe"):
            raise HarnessError("--reload is finit or modprobe")
        validate_knobs(dict(self.knobs))

    def repro(self, scheme: str | None = None, workload: str | None = None) -> str:
        argv = ["python", "-m", "harness", "race", "--kernel", self.kernel,
                "--scheme", scheme or ",".join(self.schemes),
                "--workload", workload or ",".join(self.workloads),
                "--duration", f"{self.duration_s:g}", "--seed", str(self.seed), "--accel", self.accel,
                "--providers", str(self.providers), "--reload", self.reload,
                "--unload-pause", str(self.unload_pause_ms)]
        argv += [a for k, v in self.knobs for a in ("--knob", f"{k}={v}")]
        if self.rcu_expedited:
            argv.append("--rcu-expedited")
        return " ".join(shlex.quote(a) for a in argv)


def roles_for(workload: str, mods: BuiltModules, spec: RaceSpec, release: str) -> list[list[str]]:
    """Racer argv per role: the unloader against the callers of one workload."""
    from .racer import RoleSpec

    target = mods.spec.provider_names[0]
    chosen = ("lookup", "mount", "fsmount") if workload == "all" else (workload,)
    common = dict(name=target, duration_ms=int(spec.duration_s * 1000), seed=spec.seed,
                  barrier=BARRIER, parties=1 + len(chosen), progress=True)
    callers = {
        "lookup": RoleSpec("looker", ctl=mods.spec.ctl_device, **common),
        "mount": RoleSpec("mounter", fstype=mods.spec.fs_name, dir="/mnt/bus", **common),
        "fsmount": RoleSpec("fsmounter", fstype=f"{target}fs", dir="/mnt/own", **common),
    }
    unloader = RoleSpec("unloader", ko=f"/lib/modules/{release}/extra/{target}.ko",
                        params=" ".join(f"{k}={v}" for k, v in spec.knobs), load=spec.reload,
                        pause_us=spec.unload_pause_ms * 1000, **common)
    return [r.argv(RACER) for r in (unloader, *(callers[w] for w in chosen))]


def prepare_guest(vm: Vm, mods: BuiltModules, spec: RaceSpec) -> None:
    """Knobs for request_module loads, the core loaded, the target loaded."""
    options = "".join(f"options {p} " + " ".join(f"{k}={v}" for k, v in spec.knobs) + "\n"
                      for p in mods.spec.provider_names if spec.knobs)
    vm.ssh.upload(options.encode(), "/etc/modprobe.d/harness.conf")
    vm.ssh.run(f"mkdir -p /mnt/bus /mnt/own && /sbin/modprobe {mods.spec.core} && "
               f"/sbin/modprobe {mods.spec.provider_names[0]}", check=True)


def run_one(vm: Vm, mods: BuiltModules, spec: RaceSpec, scheme: str, workload: str) -> RunResult:
    """One workload in a booted guest; the guest may die doing it."""
    argvs = roles_for(workload, mods, spec, vm.image.kernel.release)
    offset = vm.console_size()
    results, note, seconds = run_roles(vm, argvs, spec.duration_s, label=f"{scheme}/{workload}")
    time.sleep(0.5)  # let the console catch up with a late oops
    splats = new_splats(vm.console_text(), offset)
    return summarise_run(scheme, workload, results, splats, note, spec.repro(scheme, workload),
                         seconds)


def run_roles(vm: Vm, argvs: list[list[str]], duration_s: float, label: str = "",
              slack_s: float = 60) -> tuple[list, str, float]:
    """Start racer roles together on parallel SSH channels and collect them:
    (RoleResults in argv order, a note if the guest died or hung, seconds).
    A role still running `slack_s` after `duration_s` counts as a hang."""
    from .racer import RoleResult, parse_role_output

    vm.ssh.run(f"rm -f {BARRIER}", check=True)
    t0 = time.monotonic()
    counts = [0] * len(argvs)

    def counter(i: int):
        def on_stderr(data: bytes) -> None:
            for line in data.decode(errors="replace").splitlines():
                if line.startswith("progress "):
                    counts[i] = int(line.split()[1])
        return on_stderr

    running = [vm.ssh.start(" ".join(shlex.quote(a) for a in argv), on_stderr=counter(i))
               for i, argv in enumerate(argvs)]
    results: list = []
    note = ""
    deadline = t0 + duration_s + slack_s
    last_report = 0.0
    while not all([r.done() for r in running]):  # a list: drain every channel
        now = time.monotonic()
        if not vm.alive():
            note = "guest died during the race"
            break
        if not vm.ssh.alive():
            note = "SSH connection lost during the race"
            break
        if now > deadline:
            note = f"roles still running {duration_s + slack_s:.0f}s after start: hang"
            break
        if label and now - last_report >= 5:
            left = max(0.0, duration_s - (now - t0))
            ops = ", ".join(f"{a[1]} {c}" for a, c in zip(argvs, counts))
            progress(f"race {label}: {left:4.0f}s left; iterations: {ops}")
            last_report = now
        time.sleep(0.1)
    if not note:  # every channel closed: maybe because the guest went away
        time.sleep(0.5)
        if not vm.alive():
            note = "guest died during the race"
        elif not vm.ssh.alive():
            note = "SSH connection lost during the race"
    for r, argv in zip(running, argvs):
        if note and not r.done():
            results.append(RoleResult.failed(argv[1], note))
            continue
        res = r.wait(5)
        results.append(parse_role_output(res.stdout, role=argv[1], exit_status=res.exit_status,
                                         stderr=res.stderr))
    return results, note, time.monotonic() - t0


def race(spec: RaceSpec, keep: bool = False) -> tuple[RaceReport, Vm | None]:
    """Run every scheme x workload, one fresh guest per scheme.  With `keep`,
    the last guest is returned still running (the caller must kill it)."""
    from .racer import build_racer

    kfiles = kernels.fetch(kernels.get_spec(spec.kernel), quiet=True)
    racer = build_racer()
    report = RaceReport(kernel=kfiles.release, kernel_spec=spec.kernel, accel="", seed=spec.seed,
                        duration_s=spec.duration_s, rcu_expedited=spec.rcu_expedited,
                        knobs=dict(spec.knobs), reload=spec.reload)
    for i, scheme in enumerate(spec.schemes):
        mods = build(kfiles, ModuleSetSpec(scheme, providers=spec.providers))
        img = build_image(kfiles, tuple(mods.ko_files), (GuestExtra(racer, RACER),))
        vm = Vm(img, VmConfig(accel=spec.accel, rcu_expedited=spec.rcu_expedited), name=f"race-{scheme}")
        try:
            vm.boot()
            report.accel = vm.accel
            prepare_guest(vm, mods, spec)
            for workload in spec.workloads:
                spoiled = report.runs and report.runs[-1].scheme == scheme and report.runs[-1].splats
                if spoiled or not vm.alive() or not vm.ssh.alive():
                    vm.kill()
                    vm = Vm(img, vm.config, name=f"race-{scheme}")
                    vm.boot()
                    prepare_guest(vm, mods, spec)
                run = run_one(vm, mods, spec, scheme, workload)
                run.console_log = str(vm.log_path)
                report.runs.append(run)
                progress(f"race {scheme}/{workload}: {run.verdict}")
        except BaseException:
            vm.kill()
            raise
        if keep and i == len(spec.schemes) - 1 and vm.alive():
            return report, vm
        vm.kill()
    return report, None


def _hold(vm: Vm) -> None:
    """--keep: leave the last guest up for a human until Ctrl-C."""
    print(f"\nguest kept: {vm.image.kernel.release} at 127.0.0.1:{vm.port}\n"
          f"  shell:   python -m harness shell --attach {vm.port}\n"
          f"  console: {vm.log_path}\n"
          "press Ctrl-C here to tear it down", file=sys.stderr)
    try:
        while vm.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        vm.kill()


# ---------------------------------------------------------------- CLI


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_race_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=kernels.DEFAULT_KERNEL,
                   help="spec, comma list or 'all' (one report per kernel)")
    p.add_argument("--scheme", default=",".join(SCHEMES), help=f"comma list of {', '.join(SCHEMES)}")
    p.add_argument("--workload", default="lookup,mount", help=f"comma list of {', '.join(WORKLOADS)}")
    p.add_argument("--duration", type=float, default=15.0, metavar="S", help="seconds per run")
    p.add_argument("--seed", type=int, default=None, help="default: random, printed in the report")
    p.add_argument("--knob", action="append", default=None, metavar="NAME=VALUE",
                   help="provider parameter (exit_delay_ms, call_delay_us, init_delay_ms, exit_tail_ms); default "
                        + " ".join(f"{k}={v}" for k, v in DEFAULT_KNOBS))
    p.add_argument("--unload-pause", type=int, default=100, metavar="MS",
                   help="how long the unloader leaves the reloaded module live (default 100)")
    p.add_argument("--providers", type=int, default=2)
    p.add_argument("--reload", default="finit", choices=("finit", "modprobe"))
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument("--rcu-expedited", action="store_true")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON report here")
    p.add_argument("--keep", action="store_true", help="leave the last guest up for a shell")


def parse_knobs(items: list[str] | None) -> tuple[tuple[str, int], ...]:
    if items is None:
        return DEFAULT_KNOBS
    knobs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"--knob wants NAME=VALUE, got {item!r}")
        knobs[name.strip()] = value.strip()
    return tuple(sorted(validate_knobs(knobs).items()))


def cmd_race(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    specs = [RaceSpec(kernel=k.name, schemes=_csv(args.scheme), workloads=_csv(args.workload),
                      duration_s=args.duration, seed=seed, knobs=parse_knobs(args.knob),
                      accel=args.accel, rcu_expedited=args.rcu_expedited,
                      providers=args.providers, reload=args.reload,
                      unload_pause_ms=args.unload_pause)
             for k in kernels.parse_specs(args.kernel)]
    reports = []
    for spec in specs:
        progress(f"race on {spec.kernel}: schemes {','.join(spec.schemes)}, workloads "
                 f"{','.join(spec.workloads)}, {spec.duration_s:g}s each, seed {spec.seed}")
        report, kept = race(spec, keep=args.keep and spec is specs[-1])
        reports.append(report)
        print(render_table(report), flush=True)
    out = build_dir() / "reports" / f"race-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = [asdict(r) for r in reports]
    text = json.dumps(doc[0] if len(doc) == 1 else doc, indent=1)
    out.write_text(text)
    if args.json:
        args.json.write_text(text)
    print(f"report: {args.json or out}", file=sys.stderr)
    if kept is not None:
        _hold(kept)
    return 1 if any(r.unexpected_splats() for r in reports) else 0
