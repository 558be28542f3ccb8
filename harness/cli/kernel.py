"""`kernels`, `fetch`, `build` and `cachekey`: the kernel stage from the shell."""

from __future__ import annotations

import argparse
import json
import sys

from .. import kernels
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
