"""Entry points found, not written: `discover` loads each module in a guest
of the kernel (with its whole module tree), reads what it registered and
its aliases, and keeps the ops whose one call succeeded; `race --target
MODULE` without --op races a module by those ops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.tools import race_cli

# One module per way in, and two that have none.
EXPECTED = {
    "configfs": "mount:none:configfs",  # /proc/filesystems, nodev
    "vfat": "mount:/dev/loop0:vfat",  # a block file system with an image made by busybox
    "isofs": "mount:/dev/loop0:iso9660:ro",  # one with an image made on the host (pycdlib)
    "udf": "mount:/dev/loop0:udf:ro",
    "dummy": "netdev-add:dummy",  # rtnl-link-dummy
    "gtp": "netdev-add:gtp:data=5/u8/1:hold=0",  # rtnl-link-gtp, whose newlink needs an attribute (LINK_DATA)
    "uinput": "open:/dev/uinput",  # /dev and devname:uinput
    "twofish_generic": "socket:alg:seqpacket:0:skcipher:ecb(twofish-generic)",  # /proc/crypto, a bare cipher
    "ctr": "socket:alg:seqpacket:0:skcipher:ctr(aes)",  # crypto-ctr, a template
    "can_raw": "socket:can:raw:1",  # can-proto-1
    "sctp": "socket:inet6:stream:132",  # net-pf-10-proto-132: the first type that works
    "nls_cp437": "mount:/dev/loop0:vfat:codepage=437",  # its name: vfat asks for it
    "sch_sfq": "qdisc-add:sfq",  # its name (6.1 has no net-sch- alias): tc asks for sch_KIND
}


def discover(kernel: str, cwd: Path, *modules: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = cwd / "found.json"
    argv = [sys.executable, "-m", "harness", "discover", "--kernel", kernel, "--json", str(out), *modules]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=cwd)
    return proc, json.loads(out.read_text()) if out.is_file() else []


def test_each_way_in_is_derived_and_reaches_its_module(kernel_spec, tmp_path):
    proc, found = discover(kernel_spec.name, tmp_path, *EXPECTED, "e1000", "nosuch")
    assert proc.returncode == 0, proc.stderr[-3000:]
    by = {d["module"]: d for d in found}
    for module, op in EXPECTED.items():
        assert op in by[module]["ops"], (module, by[module])
        assert f"{module}: " in proc.stdout
    assert by["e1000"]["ops"] == [] and by["e1000"]["why_none"] == "needs hardware", by["e1000"]
    assert by["nosuch"]["why_none"] == "no such module"
    assert "e1000: none (needs hardware)" in proc.stdout
    assert by["vfat"]["registered"]["filesystems"] == ["\tvfat"]
    assert "13 of 15 modules have ops that reach them" in proc.stderr


def test_a_module_with_no_row_races_by_its_derived_ops(kernel_spec, kernel, tmp_path):
    proc, report = race_cli(kernel_spec.name, tmp_path, "--target", "configfs_derived_nope", timeout=300)
    assert proc.returncode == 2 and report is None
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: --target configfs_derived_nope: kernel {kernel.name} ({kernel.release}) has no module "
        "'configfs_derived_nope'; a target is a ready-made row (vfat, ext4, configfs, null_blk, brd, dummy, nlmon, "
        "uinput, md4, algif_hash, can_bcm, can_raw, noowner), a module of the kernel's, a .ko or a module folder"
    ]
    proc, report = race_cli(kernel_spec.name, tmp_path, "--target", "ctr", "--duration", "3", "--seed", "3")
    assert "target ctr: derived ops socket:alg:seqpacket:0:skcipher:ctr(aes)" in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = report["runs"][0]
    assert run["verdict"] == "clean" and run["ops"]["delete_module"]["ok"] >= 1
    assert all(r["ok_live"] > 0 for r in run["reach"]), run["reach"]


def test_a_module_no_op_reaches_is_refused_with_what_was_tried(kernel_spec, tmp_path):
    # minix is a block file system the guest cannot make an image of: its mount of a blank one fails.
    proc, report = race_cli(kernel_spec.name, tmp_path, "--target", "minix", timeout=300)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and report is None and len(errors) == 1, proc.stderr[-3000:]
    assert "no op reaches it (no derived op reached it); tried mount:/dev/loop0:minix: EINVAL" in errors[0], errors
