"""`kernels`, `fetch`, `build` and `cachekey`: the kernel stage from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import time

from .. import kernels
from ..errors import HarnessError
from ..kernels import apt, modbuild, table
from ..kernels.cachekey import cache_key, key_inputs
from ..progress import progress
from .args import kernel_rows


def cmd_kernels(args: argparse.Namespace) -> int:
    rows = kernels.status(refresh=args.refresh)  # before the header: an unusable cache is one error line, nothing else
    print(f"{'spec':<11} {'suite':<13} {'release':<26} {'debian version':<22} state")
    for spec, res, state in rows:
        default = " (default)" if spec.name == kernels.DEFAULT_KERNEL else ""
        # Kernels built here are named, never part of `all`: a cold build takes minutes.
        made = f" (built here from {spec.source}; not in 'all')" if spec.source else ""
        if res is None:
            print(f"{spec.name:<11} {spec.release:<13} {'?':<26} {'?':<22} {state}")
        else:
            print(f"{spec.name:<11} {spec.release:<13} {res.abi:<26} {res.version:<22} {state}{default}{made}")
    from ..kernels import derive

    for d in derive.built():
        opts = " ".join(d.get("options") or []) or "-"
        patches = " ".join(str(p).rsplit("/", 1)[-1] for p in d.get("patches") or []) or "-"
        print(f"{d['name']}  over {d['base']} ({d['release']}): options {opts}; patches {patches}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    for spec in kernel_rows(args):
        files = kernels.fetch(spec)
        print(f"{spec.name}: {files.release} in {files.root}")
        if args.debug_info:
            from ..kernels import debuginfo

            print(f"{spec.name}: debug info in {debuginfo.fetch(files)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """One line per kernel on stdout: `SPEC RELEASE: KO...`; progress on stderr."""
    modbuild.source_files(args.source)
    specs = kernel_rows(args)
    for i, spec in enumerate(specs, 1):
        progress(f"build {args.source} for {spec.name} ({i}/{len(specs)})")
        kfiles = kernels.fetch(spec, quiet=True)
        built = modbuild.build_dir(kfiles, args.source)
        print(f"{spec.name} {kfiles.release}: {' '.join(str(k) for k in built.ko_files)}", flush=True)
    return 0


def cmd_cachekey(args: argparse.Namespace) -> int:
    """`harness-SPEC-HASH` on stdout, the CI cache key of a kernel's downloads and builds."""
    row = table.get_row(args.spec)  # a row of the table: a local tree is not downloaded
    res = apt.resolve(row)
    if args.explain:
        print(json.dumps(key_inputs(row, res), indent=1), file=sys.stderr)
    print(cache_key(row, res))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .. import cachestore
    from ..paths import cache_dir

    cache = cache_dir()
    if args.action == "list":
        if args.keep_days is not None or args.max_size or args.dry_run:
            raise HarnessError("--keep-days, --max-size and --dry-run go with `cache prune`")
        print(f"cache: {cache}")
        print(cachestore.render(cachestore.entries(cache), args.verbose))
        return 0
    if args.keep_days is None and args.max_size is None:
        raise HarnessError("cache prune needs --keep-days N or --max-size SIZE (or both)")
    if args.keep_days is not None and args.keep_days < 0:
        raise HarnessError(f"--keep-days must be >= 0, got {args.keep_days:g}")
    max_size = cachestore.parse_size(args.max_size) if args.max_size is not None else None
    found = cachestore.entries(cache)
    chosen = cachestore.choose(found, time.time(), args.keep_days, max_size)
    done = cachestore.prune(cache, chosen, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for e in done.removed:
        print(
            f"{verb} {e.kind.name}/{e.path.name} ({cachestore.human(e.size)}, last used {cachestore.day(e.last_use)})"
        )
    for e, why in done.kept_in_use:
        print(f"kept {e.kind.name}/{e.path.name}: {why}")
    freed = sum(e.size for e in done.removed)
    print(
        f"cache prune: {verb} {len(done.removed)} entries, {cachestore.human(freed)}; {len(done.kept_in_use)} in use kept"
    )
    return 0
