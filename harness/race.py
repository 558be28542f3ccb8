"""The race engine (placeholder until the racer lands): boots and reports."""

from __future__ import annotations

import argparse


def add_race_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", default="6.1")


def cmd_race(args: argparse.Namespace) -> int:
    from .cli import _guest

    args.accel, args.module, args.file, args.cpus, args.memory, args.rcu_expedited = "auto", [], [], 2, 1024, False
    with _guest(args) as vm:
        print(vm.ssh.run("uname -r").stdout.strip(), f"boot {vm.boot_seconds:.2f}s")
    return 0
