"""`race` and `survey`: the harness's schemes or any module raced, and the reports."""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .. import kernels
from ..errors import HarnessError
from ..exitcodes import ExitStatus
from ..guest.packages import parse_names as parse_package_names
from ..guest.packages import resolve as resolve_packages
from ..guest.vm import ACCELS
from ..paths import build_dir
from ..progress import progress
from ..race.engine import RaceGuest, RaceStages
from ..race.kbuild import KNOBS, Knobs
from ..race.kinds import race
from ..race.outcomes import MemoryDump, RaceReport, exit_status, stopped_report
from ..race.schemes import DEFAULT_SCHEMES, SCHEMES, WORKLOADS
from ..race.spec import DEFAULT_KNOBS, DEFAULT_WORKLOADS, RaceSpec
from ..race.targets import ROWS as TARGETS
from ..race.targets import Kind, TargetRow
from ..reports.table import render_table
from ..util import need_tool, write_text
from .args import (
    add_kernel_change_args,
    add_packages_arg,
    check_output,
    csv,
    int_in,
    kernel_row,
    kernel_rows,
    seconds_arg,
)
from .guest import start_gdb


def add_race_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--kernel",
        default=kernels.DEFAULT_KERNEL,
        help="spec or PATH of a kernel tree, comma list or 'all' (one report per kernel)",
    )
    add_kernel_change_args(p)
    p.add_argument(
        "--target",
        metavar="NAME|PATH.ko|DIR",
        help="race this module's unload instead of the harness's own schemes: a ready-made target "
        f"({', '.join(TARGETS)}), one of the kernel's modules by name, a built .ko or a module folder",
    )
    p.add_argument(
        "--op",
        action="append",
        default=[],
        metavar="OP",
        help="with --target: a caller operation (open:PATH[:read=N], ioctl:PATH:REQ, mount:SRC:FSTYPE[:OPTS], "
        "socket:FAMILY:TYPE:PROTO[:ALGTYPE:ALGNAME], netdev-add:KIND, qdisc-add:KIND, exec:CMD); one role each",
    )
    p.add_argument("--callers", type=int, default=1, metavar="N", help="with --target: callers per --op (default 1)")
    p.add_argument(
        "--no-hold",
        dest="hold",
        action="store_false",
        help="with --target: quick callers only; by default each --op without its own :hold= also gets "
        "callers that keep what they took (file, mount, socket, link) across an unload",
    )
    p.add_argument(
        "--scheme", default=None, help=f"comma list of {', '.join(SCHEMES)} (default {','.join(DEFAULT_SCHEMES)})"
    )
    p.add_argument("--workload", default=None, help=f"comma list of {', '.join(WORKLOADS)} (default lookup,mount)")
    p.add_argument("--duration", type=float, default=15.0, metavar="S", help="seconds per run")
    p.add_argument("--seed", type=int, default=None, help="default: random, printed in the report")
    p.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"provider parameter ({', '.join(KNOBS)}); "
        "overrides that knob only; defaults " + " ".join(DEFAULT_KNOBS.args()),
    )
    p.add_argument(
        "--unload-pause",
        type=int,
        default=100,
        metavar="MS",
        help="how long the unloader leaves the reloaded module live (default 100)",
    )
    p.add_argument("--providers", type=int, default=2)
    p.add_argument(
        "--reload",
        default=None,
        choices=("finit", "modprobe"),
        help="how the unloader reloads: finit_module of the .ko (schemes' default) or modprobe (targets')",
    )
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument("--rcu-expedited", action="store_true")
    p.add_argument(
        "--cold-boot",
        action="store_true",
        help="boot every guest instead of restoring its kernel's saved base guest (and save none)",
    )
    p.add_argument(
        "--contention",
        type=int,
        default=0,
        metavar="N",
        help="N host processes spin on the CPUs while the roles run (a loaded CI runner)",
    )
    p.add_argument(
        "--module-src",
        action="append",
        default=[],
        metavar="DIR",
        help="a kbuild module directory built for the kernel and put in every guest",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON report here")
    p.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="also write the HTML report here (index.html beside the JSON report is always written)",
    )
    p.add_argument("--keep", action="store_true", help="leave the last guest up for a shell")
    p.add_argument(
        "--dump",
        action="store_true",
        help="write the guest's memory as an ELF vmcore (drgn, crash) at the first splat, or after the last run "
        "if none splatted; the report names it and the vmlinux that reads it",
    )
    p.add_argument(
        "--export",
        type=Path,
        metavar="DIR",
        help="write the first run that splatted (else the first run) as a folder that reproduces it without the "
        "harness: its modules, the static racer, repro.sh, a README (one folder per kernel under DIR if several)",
    )
    p.add_argument(
        "--gdb",
        action="store_true",
        help="with --keep: start the kept guest's gdb stub on a free local port and print the gdb command "
        "(kernel symbols, and the modules loaded then at their addresses)",
    )
    add_ci_args(p)
    add_packages_arg(p)


def add_survey_args(sv: argparse.ArgumentParser) -> None:
    sv.add_argument("--kernel", default=kernels.DEFAULT_KERNEL, help="spec or PATH, comma list or 'all'")
    add_kernel_change_args(sv)
    sv.add_argument(
        "--target",
        default=",".join(TARGETS),
        help=f"comma list of {', '.join(TARGETS)} or any module names (their ops derived; default: every row)",
    )
    add_module_set_args(sv)
    sv.add_argument(
        "--kind",
        default=None,
        metavar="KIND,...",
        help=f"race only targets of these kinds ({', '.join(KIND_NAMES)}); the rest are left out and counted",
    )
    sv.add_argument("--duration", type=seconds_arg, default=10.0, metavar="S", help="seconds per target race")
    sv.add_argument("--callers", type=int_in(1, 16), default=2, metavar="N", help="callers per operation")
    sv.add_argument("--seed", type=int, default=None)
    sv.add_argument("--accel", default="auto", choices=ACCELS)
    sv.add_argument("--out", type=Path, default=None, metavar="DIR", help="default: build/survey")
    sv.add_argument(
        "--resume",
        action="store_true",
        help="go on from the survey.json in --out (a stopped survey): skip what it holds, keep its seed",
    )
    add_ci_args(sv)


def add_discover_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default=kernels.DEFAULT_KERNEL, help="one spec or PATH")
    add_kernel_change_args(p)
    p.add_argument("--accel", default="auto", choices=ACCELS)
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the findings as JSON")
    add_module_set_args(p)
    p.add_argument("module", nargs="*", metavar="MODULE", help="module names (the kernel's own)")


def add_module_set_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all-modules", "--all", action="store_true", help="every loadable module of the kernel")
    p.add_argument(
        "--under",
        default=None,
        metavar="DIR,...",
        help="with --all-modules: only those under these folders of the module tree (kernel/fs,kernel/crypto)",
    )
    p.add_argument(
        "--shard", default=None, metavar="I/N", help="the I-th of N slices of the modules (for parallel CI jobs)"
    )
    p.add_argument(
        "--load-hardware",
        action="store_true",
        help="load drivers whose aliases are all hardware ones too (by default: 'needs hardware', not loaded)",
    )


# --kind's names: the target kinds, with the short names a user types.
KIND_NAMES: dict[str, Kind] = {
    **{k.value: k for k in Kind},
    "fs": Kind.FILESYSTEM,
    "char": Kind.CHAR,
    "misc": Kind.CHAR,
}


def parse_kinds(text: str | None) -> frozenset[Kind] | None:
    """--kind as a set of kinds (None: every kind); a name it does not know is one line."""
    if text is None:
        return None
    out = set()
    for name in csv(text, "kind"):
        if name not in KIND_NAMES:
            raise HarnessError(f"--kind {name!r}: not a target kind; give some of {', '.join(KIND_NAMES)}")
        out.add(KIND_NAMES[name])
    return frozenset(out)


def check_module_set(args: argparse.Namespace) -> tuple[int, int] | None:
    """--under and --shard checked before anything is fetched; the shard, parsed."""
    from ..race import discover

    if args.under is not None:
        if not args.all_modules:
            raise HarnessError("--under goes with --all-modules")
        csv(args.under, "under")
    return discover.parse_shard(args.shard) if args.shard is not None else None


def module_set(
    args: argparse.Namespace, kfiles: "kernels.KernelFiles", given: Sequence[str], which: tuple[int, int] | None
) -> list[str]:
    """The modules a command asked for: named, or --all-modules [--under], then the shard."""
    from ..race import discover

    if args.all_modules:
        under = list(csv(args.under, "under")) if args.under is not None else []
        names = discover.loadable(kfiles.modules_dir, under)
        if not names:
            raise HarnessError(f"kernel {kfiles.name} has no loadable module under {args.under or 'its tree'}")
        return discover.shard(names, which)
    return discover.shard(given, which) if which else list(given)


def cmd_discover(args: argparse.Namespace) -> int:
    """Each module loaded in one guest that holds the kernel's whole module
    tree; its ops (or why none) printed as each is done."""
    from ..race import discover

    names = discover.check_names(args.module)
    if bool(names) == bool(args.all_modules):
        raise HarnessError("discover takes module names or --all-modules (one of the two)")
    which = check_module_set(args)
    if args.json:
        check_output(args.json)
    kfiles = kernels.fetch(kernel_row(args), quiet=True)
    names = module_set(args, kfiles, names, which)
    found = discover.run(
        kfiles, names, args.accel, lambda d: print(discover.render([d]), flush=True), args.load_hardware
    )
    if args.json:
        write_text(args.json, discover.to_json(found))
    first, *rest = discover.summary(found)
    progress(f"discover {kfiles.name}: {first}")
    for line in rest:
        progress(line)
    return int(ExitStatus.OK)


def add_ci_args(p: argparse.ArgumentParser) -> None:
    """Results in the kernel CI's formats (docs/ci-formats.md)."""
    p.add_argument(
        "--kcidb",
        type=Path,
        metavar="FILE",
        help="also write a KCIDB submission (KernelCI's results database; needs kcidb-io: pip install '.[ci]')",
    )
    p.add_argument(
        "--kcidb-origin",
        default="harness",
        metavar="NAME",
        help="the KCIDB origin of every object (lower-case letters, digits, _; default harness)",
    )
    p.add_argument(
        "--kcidb-log-url",
        default=None,
        metavar="PREFIX",
        help="console logs' URLs in the submission: PREFIX/NAME (default: file:// URLs of the local logs)",
    )
    p.add_argument("--ktap", type=Path, metavar="FILE", help="also write the results as KTAP version 1")


def check_ci_outputs(args: argparse.Namespace) -> None:
    """--kcidb and --ktap refused before anything boots."""
    if args.kcidb:
        from ..reports import kcidb

        check_output(args.kcidb, "--kcidb")
        kcidb.check_origin(args.kcidb_origin)
        kcidb.require_kcidb()
    if args.ktap:
        check_output(args.ktap, "--ktap")


def write_ci_outputs(args: argparse.Namespace, reports: Sequence[RaceReport]) -> None:
    if args.kcidb:
        from ..reports import kcidb

        kcidb.write(kcidb.race_submission(reports, args.kcidb_origin, args.kcidb_log_url), args.kcidb)
        print(f"kcidb: {args.kcidb}", file=sys.stderr)
    if args.ktap:
        from ..reports import ktap

        ktap.write(reports, args.ktap)
        print(f"ktap: {args.ktap}", file=sys.stderr)


def parse_knobs(items: Sequence[str] | None) -> Knobs:
    """The defaults, each `NAME=VALUE` overriding that knob only."""
    given: dict[str, object] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            raise HarnessError(f"--knob wants NAME=VALUE, got {item!r}")
        given[name.strip()] = value.strip()
    return Knobs({**DEFAULT_KNOBS, **Knobs(given)})


def specs_from_args(args: argparse.Namespace) -> list[RaceSpec]:
    """One settings record per kernel: `--kernel` parsed (a local tree found) once, here."""
    if args.target:
        mixed = [
            f
            for f, v in (
                ("--scheme", args.scheme),
                ("--workload", args.workload),
                ("--module-src", args.module_src),
                ("--providers", args.providers != 2),
                ("--knob", args.knob),
            )
            if v
        ]
        if mixed:
            raise HarnessError(
                f"--target races a module against --op callers; {', '.join(mixed)} belong to the harness's own schemes"
            )
        make = functools.partial(RaceSpec, target=args.target, ops=tuple(args.op), callers=args.callers, hold=args.hold)
    else:
        if args.op or args.callers != 1 or not args.hold:
            raise HarnessError(
                "--op and --callers go with --target (a module to race), --no-hold too; the schemes have their workloads"
            )
        make = functools.partial(
            RaceSpec,
            schemes=csv(",".join(DEFAULT_SCHEMES) if args.scheme is None else args.scheme, "scheme"),
            workloads=csv(",".join(DEFAULT_WORKLOADS) if args.workload is None else args.workload, "workload"),
            knobs=parse_knobs(args.knob),
            providers=args.providers,
            module_src=tuple(str(Path(m).resolve()) for m in args.module_src),
        )
    seed = args.seed if args.seed is not None else random.randrange(1, 2**31)
    derive = args.target is not None and not args.op and needs_derived_row(args.target)
    return [
        make(
            kernel=k,
            row=derived_row(k, args.target, args.accel) if derive else None,
            duration_s=args.duration,
            seed=seed,
            accel=args.accel,
            rcu_expedited=args.rcu_expedited,
            reload=args.reload or "",
            unload_pause_ms=args.unload_pause,
            contention=args.contention,
            cold_boot=args.cold_boot,
            guest_packages=parse_package_names(args.guest_packages),
        )
        for k in kernel_rows(args, ",".join(csv(args.kernel, "kernel")))
    ]


def needs_derived_row(target: str) -> bool:
    """A kernel module's name that has no row: its ops are derived (`discover`)."""
    from ..race.targets import find

    return "/" not in target and not target.endswith(".ko") and find(target) is None


def derived_row(kernel: kernels.KernelRow, name: str, accel: str) -> TargetRow:
    from ..guest.modtree import module_state
    from ..race import discover

    (module,) = discover.check_names([name])
    kfiles = kernels.fetch(kernel, quiet=True)
    state = module_state(kfiles, module)
    if state != "module":
        how = "has it built in: it can never be unloaded" if state else f"has no module {name!r}"
        raise HarnessError(
            f"--target {name}: kernel {kfiles.name} ({kfiles.release}) {how}; a target is a ready-made row "
            f"({', '.join(TARGETS)}), a module of the kernel's, a .ko or a module folder"
        )
    progress(f"target {name}: no ready-made row and no --op; deriving its ops on {kfiles.name}")
    return discover.derive_row(kfiles, module, accel)


def _race_each(
    args: argparse.Namespace,
    specs: Sequence[RaceSpec],
    stages: Callable[[RaceSpec], RaceStages] | None,
    reports: list[RaceReport],
) -> RaceGuest | None:
    """Race every kernel's spec in turn, each report appended as it ends; the kept guest."""
    kept: RaceGuest | None = None
    for spec in specs:
        hogs = f", {spec.contention} host CPU hogs" if spec.contention else ""
        if spec.target is not None:
            progress(
                f"race on {spec.kernel_name}: target {spec.target}, callers "
                f"{' '.join(op.text for op in spec.op_rows)} x{spec.callers}"
                f"{' (quick and held)' if spec.hold else ' (quick only)'}, {spec.duration_s:g}s, "
                f"seed {spec.seed}{hogs}"
            )
        else:
            progress(
                f"race on {spec.kernel_name}: schemes {','.join(spec.schemes)}, workloads "
                f"{','.join(spec.workloads)}, {spec.duration_s:g}s each, seed {spec.seed}{hogs}"
            )
        report, kept = race(
            spec, keep=args.keep and spec is specs[-1], stages=stages(spec) if stages else None, dump=args.dump
        )
        reports.append(report)
        print(render_table(report), flush=True)
    return kept


def _report_text(reports: Sequence[RaceReport]) -> str:
    """The JSON report: one object for one kernel, a list for several."""
    doc = [r.to_json() for r in reports]
    return json.dumps(doc[0] if len(doc) == 1 else doc, indent=1)


def cmd_race(args: argparse.Namespace, stages: Callable[[RaceSpec], RaceStages] | None = None) -> int:
    if args.export:
        from ..reports.repro import check_folder

        check_folder(args.export)  # before the race, not after it
    if args.gdb and not args.keep:
        raise HarnessError("--gdb needs --keep: the stub is the kept guest's, after the race")
    if args.gdb:
        need_tool("gdb", "gdb")
    specs = specs_from_args(args)
    resolve_packages(specs[0].guest_packages)  # an unknown package is refused before anything else
    # One folder per race: the JSON report and its page (index.html) side by side.
    out = build_dir() / "reports" / f"race-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}" / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    check_output(out)
    if args.json:
        check_output(args.json)
    check_ci_outputs(args)
    if args.html:
        from ..reports.plots import require_plotting

        check_output(args.html, "--html")
        require_plotting()
    reports: list[RaceReport] = []
    kept: RaceGuest | None = None
    try:
        kept = _race_each(args, specs, stages, reports)
    except KeyboardInterrupt as e:  # a cancelled job: the runs done stay, marked, as JSON alone (no time for a page)
        stopped = stopped_report(e)
        if stopped is not None:
            reports.append(stopped)
        if reports:
            for path in (out, *([args.json] if args.json else [])):
                write_text(path, _report_text(reports))
            progress(f"race: stopped during {reports[-1].interrupted or 'the next kernel'}; the runs done: {out}")
        raise
    text = _report_text(reports)
    write_text(out, text)
    if args.json:
        write_text(args.json, text)
    from ..reports.race_page import write_race_pages

    pages = write_race_pages(reports, [out.with_name("index.html"), *([args.html] if args.html else [])])
    print(f"report: {args.json or out}\npage: {pages[-1]}", file=sys.stderr)
    for r in reports:
        for run in r.runs:
            if run.dump is not None:
                print(f"{dump_line(run.dump)}", file=sys.stderr)
    if args.export:
        from ..guest.programs import build_racer
        from ..reports.repro import export, pick_run

        for r in reports:
            folder = args.export if len(reports) == 1 else args.export / r.kernel_spec
            print(f"reproducer: {export(r, pick_run(r, None), folder, build_racer())}", file=sys.stderr)
    write_ci_outputs(args, reports)
    status = exit_status(reports)
    for r in reports:
        for line in r.problems():
            print(f"FAIL {r.kernel_spec}: {line}", file=sys.stderr)
    if kept is not None:
        _hold(kept, args.gdb)
    elif args.keep:
        print("no guest kept: the last one did not outlive its race (see its console log)", file=sys.stderr)
    return int(status)


def cmd_survey(args: argparse.Namespace) -> int:
    """Every target row on every kernel; a target that cannot run on a kernel
    (not a module there, say) is a row of its own, never the end of the survey.
    survey.json is rewritten after every target, and a survey stopped by
    Ctrl-C or SIGTERM writes what it has (with the target it was racing)
    before it exits; `--resume` goes on from there."""
    from ..race import discover
    from ..reports import survey

    names = [] if args.all_modules else csv(args.target, "target")
    for name in names:
        if name not in TARGETS and not needs_derived_row(name):
            raise HarnessError(f"survey --target takes target rows and module names, not {name!r}")
    discover.check_names([n for n in names if needs_derived_row(n)])
    which = check_module_set(args)
    kinds = parse_kinds(args.kind)
    specs = kernel_rows(args, ",".join(csv(args.kernel, "kernel")))
    check_ci_outputs(args)
    out = args.out or build_dir() / "survey"
    left_out: list[str] = []  # targets of other kinds than --kind's
    state = survey.Survey()
    if args.resume:
        if not (out / "survey.json").is_file():
            raise HarnessError(f"--resume: no survey to go on from in {out} (no survey.json)")
        state = survey.Survey.load(out / "survey.json")
        state.interrupted = []
    done = state.done()
    old_seed = state.reports[0].seed if state.reports else None
    seed = args.seed if args.seed is not None else old_seed or random.randrange(1, 2**31)
    when = time.strftime("%Y-%m-%d")
    doing, finished = "", False
    checkpoint = time.monotonic()
    try:
        for kspec in specs:
            doing = f"fetching {kspec.name}"
            try:
                kfiles = kernels.fetch(kspec, quiet=True)
            except HarnessError as e:
                state.not_raced += [survey.NotRaced(kspec.name, n, str(e)) for n in names or ["every module"]]
                continue
            todo = [n for n in module_set(args, kfiles, names, which) if (kspec.name, n) not in done]
            if done:
                progress(f"survey {kspec.name}: resuming, {len(todo)} targets left")
            # Modules without a row: their ops derived in one guest, before any
            # race, each kept in the state as it is found (a stopped survey
            # resumes without deriving them again).
            derived = state.derived.setdefault(kspec.name, {})
            derive = [n for n in todo if needs_derived_row(n) and n not in derived]
            if derive:
                doing = f"the ops of {len(derive)} modules on {kspec.name}"
                t0 = time.monotonic()

                def found(d: discover.Discovery) -> None:
                    nonlocal checkpoint
                    row = d.target()
                    derived[d.module] = {"row": row.to_json()} if row else {"why": discover.why_not(d)}
                    if time.monotonic() - checkpoint >= survey.CHECKPOINT_S:
                        survey.write(state, out, when, page=False)
                        checkpoint = time.monotonic()

                try:
                    discover.run(kfiles, derive, args.accel, each=found, load_hardware=args.load_hardware)
                finally:
                    took = time.monotonic() - t0
                    state.discover_seconds[kspec.name] = state.discover_seconds.get(kspec.name, 0.0) + took
            for i, name in enumerate(todo, 1):
                progress(f"survey {kspec.name}: {name} ({i}/{len(todo)})")
                doing = f"{name} on {kspec.name}"
                t0 = time.monotonic()
                try:
                    row = None
                    if name in derived:
                        if "why" in derived[name]:
                            raise HarnessError(derived[name]["why"])
                        row = TargetRow.from_json(derived[name]["row"])
                    if kinds is not None and (kind := (row or TARGETS[name]).kind) not in kinds:
                        left_out.append(f"{name} ({kind})")
                        progress(f"survey {kspec.name}: {name} left out: a {kind} target (--kind)")
                        doing = ""
                        continue
                    spec = RaceSpec(
                        kernel=kspec,
                        target=name,
                        row=row,
                        callers=args.callers,
                        duration_s=args.duration,
                        seed=seed,
                        accel=args.accel,
                    )
                    report, _ = race(spec)
                except HarnessError as e:
                    state.not_raced.append(survey.NotRaced(kspec.name, name, str(e)))
                    progress(f"survey {kspec.name}: {name} not raced: {e}")
                else:
                    state.keep(report, out)  # its events to races/, not kept in memory
                    state.seconds[doing] = round(time.monotonic() - t0, 1)
                    print(f"{kspec.name} {name}: {survey.cell(report.runs[0])}", flush=True)
                doing = ""
                # A checkpoint, so that even a SIGKILL loses little; not after every
                # target: survey.json holds every race's events and grows with them.
                if time.monotonic() - checkpoint >= survey.CHECKPOINT_S:
                    survey.write(state, out, when, page=False)
                    checkpoint = time.monotonic()
        finished = True
    finally:
        if not finished:  # stopped (Ctrl-C, SIGTERM) or failed: what is done stays, and says where it stopped
            state.interrupted = [doing or "between two targets"]
            # No page: a cancelled job has seconds before its SIGKILL, and the page of
            # many races takes longer; the resumed survey draws it.
            paths = survey.write(state, out, when, page=False)
            progress(
                f"survey: stopped while racing {state.interrupted[0]}; {paths[1]} holds the rest (survey --resume)"
            )
    paths = survey.write(state, out, when)
    print(f"survey: {paths[0]}\npage: {paths[-1]}", file=sys.stderr)
    write_ci_outputs(args, state.reports)
    if left_out:
        print(f"survey: {len(left_out)} targets of other kinds left out (--kind {args.kind})", file=sys.stderr)
    for n in state.not_raced:
        print(f"FAIL not raced: {n.line()}", file=sys.stderr)
    problems = [p for r in state.reports for p in r.problems()]
    for line in problems:
        print(f"survey: {line}", file=sys.stderr)
    return int(ExitStatus.FINDINGS if problems or state.not_raced else ExitStatus.OK)


def dump_line(d: MemoryDump) -> str:
    if not d.vmcore:
        return f"vmcore: none ({d.note})"
    line = f"vmcore: {d.vmcore} ({d.bytes >> 20} MiB in {d.seconds:.1f}s)"
    line += f"; vmlinux: {d.vmlinux}" if d.vmlinux else ""
    return line + (f"; {d.note}" if d.note else "")


def _hold(vm: RaceGuest, with_gdb: bool = False) -> None:
    """--keep: leave the last guest up for a human until Ctrl-C."""
    try:
        gdb_line = f"  gdb:     {start_gdb(vm).command}\n" if with_gdb else ""
    except BaseException:
        vm.kill()
        raise
    print(
        f"\nguest kept at 127.0.0.1:{vm.port}\n"
        f"  shell:   python -m harness shell --attach {vm.port}\n"
        f"{gdb_line}"
        f"  console: {vm.log_path}\n"
        "press Ctrl-C here to tear it down",
        file=sys.stderr,
    )
    try:
        while vm.alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        vm.kill()
