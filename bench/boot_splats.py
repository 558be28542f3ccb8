"""How often a kernel's own boot splats (a measurement, not a test).

Boots the kernel with the guest's QEMU command line but no initramfs, so each
boot ends at the root-mount panic (QEMU exits: panic=-1, -no-reboot), and
counts the boots whose console shows a splat before that panic.  The debug
kernel's boot-time KASAN report came 0.9 s into the boot, long before user
space, so the initramfs is not needed to see it, and leaving it out makes a
boot three times shorter.

    .venv/bin/python bench/boot_splats.py --kernel 6.12-debug --boots 20 --hogs 2 [--without no5lvl]

`--hogs N` keeps N host processes spinning (a busy CI runner; the report was
seen 1 in 6 boots so, 0 in 8 on a quiet machine); `--without P` boots without
the row's kernel parameter P (the same kernel as before a workaround).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import kernels  # noqa: E402
from harness.guest.image import build_image  # noqa: E402
from harness.guest.splat import parse  # noqa: E402
from harness.guest.vm import Vm, VmConfig  # noqa: E402
from harness.race.engine import host_contention  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernel", default="6.12-debug")
    p.add_argument("--boots", type=int, default=20)
    p.add_argument("--hogs", type=int, default=0)
    p.add_argument("--without", action="append", default=[], metavar="PARAM")
    args = p.parse_args()
    spec = kernels.get_spec(args.kernel)
    if args.without:
        row = dataclasses.replace(spec, cmdline=tuple(c for c in spec.cmdline if c not in args.without))
        kernels.ROWS[spec.name] = row
    kfiles = kernels.fetch(spec, quiet=True)
    vm = Vm(build_image(kfiles), VmConfig(accel="tcg", cold_boot=True))
    vm.accel = "tcg"
    argv = vm.qemu_argv(port=0)
    i = argv.index("-initrd")
    argv = argv[:i] + argv[i + 2 :]
    cmdline = argv[argv.index("-append") + 1]
    print(f"kernel {kfiles.release}; command line: {cmdline}; {args.hogs} host CPU hogs", flush=True)
    titles: collections.Counter[str] = collections.Counter()
    hit = 0
    timeout = 120 * kfiles.time_factor
    with host_contention(args.hogs):
        for n in range(1, args.boots + 1):
            t0 = time.monotonic()
            try:
                out = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
                console = out.stdout.decode(errors="replace")
            except subprocess.TimeoutExpired as e:
                console = (e.stdout or b"").decode(errors="replace")
            splats = [s for s in parse(console) if s.kind != "panic"]
            hit += bool(splats)
            titles.update(s.title for s in splats)
            print(
                f"boot {n:2d}: {time.monotonic() - t0:5.1f}s  " + ("; ".join(s.title for s in splats) or "no splat"),
                flush=True,
            )
    print(f"{hit} of {args.boots} boots splatted" + "".join(f"\n  {c} x {t}" for t, c in titles.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
