"""Generic caller ops (harness/race/ops.py) against the kernel's own modules:
each op kind runs for a few seconds in a guest while an unloader unloads
and reloads the module it calls into, and the caller must have worked while
the module was there, failed with the errno that says "gone" while it was
not, and those failures must have met unloads.

The guest's request_module() is switched off (an empty
/proc/sys/kernel/modprobe), so that a call that finds the module gone fails
at once instead of loading it back behind the unloader's back; the unloader
reloads with kmod's modprobe itself.  The minix image is made here
(`minix_image`): busybox has no mkfs.minix.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from harness.race import ops
from harness.race.racer import RoleSpec, parse_role_output

KMODS = ("loop", "minix", "dummy", "veth", "md4", "algif_hash", "uinput")
UINPUT = "/dev/racer-uinput"  # misc 10:223 that outlives the module's own node
UI_GET_VERSION = 0x8004552D  # _IOR('U', 45, unsigned int)
DURATION_MS = 3000


def minix_image(blocks: int = 64, inodes: int = 32) -> bytes:
    """An empty Minix v1 file system (14-byte names, 1 KiB blocks): boot
    block, superblock, one block each of inode map, zone map and inodes, then
    the data zones, the first of which holds the root directory."""
    bs, first_data = 1024, 5
    img = bytearray(blocks * bs)
    struct.pack_into(
        "<6HIHH", img, bs, inodes, blocks, 1, 1, first_data, 0, (7 + 512 + 512 * 512) * bs, 0x137F, 1
    )  # ..., s_max_size, MINIX_SUPER_MAGIC, MINIX_VALID_FS

    def used(block: int, first_unused: int, *bits: int) -> None:
        for bit in (*bits, *range(first_unused, bs * 8)):  # what does not exist is marked used
            img[block * bs + bit // 8] |= 1 << (bit % 8)

    used(2, inodes + 1, 0, 1)  # bit 0 is reserved; inode 1 is the root
    used(3, blocks - first_data + 1, 0, 1)  # bit 1 is the first data zone: the root's
    struct.pack_into("<HHIIBB9H", img, 4 * bs, 0o40755, 0, 32, 0, 0, 2, first_data, *[0] * 8)
    struct.pack_into("<H14sH14s", img, first_data * bs, 1, b".", 1, b"..")
    return bytes(img)


@dataclass(frozen=True)
class Case:
    op: str  # the text form
    module: str  # what the unloader unloads
    gone: str  # the errno of a call that finds the module gone
    # How long a reloaded module stays, so that calls also find it there: an
    # exec takes a while (100 ms and more under TCG).
    pause_ms: int = 50


CASES = {
    "open": Case(f"open:{UINPUT}", "uinput", "ENODEV"),  # misc_open finds no minor 223
    "ioctl": Case(f"ioctl:{UINPUT}:{UI_GET_VERSION:#x}", "uinput", "ENODEV"),
    "mount": Case("mount:/dev/loop0:minix", "minix", "ENODEV"),  # get_fs_type finds no minix
    "socket": Case("socket:alg:seqpacket:0:hash:md4", "md4", "ENOENT"),  # crypto_alloc_ahash
    "netdev-add": Case("netdev-add:dummy", "dummy", "EOPNOTSUPP"),  # rtnl_newlink: no such kind
    "netdev-add-veth": Case("netdev-add:veth", "veth", "EOPNOTSUPP"),
    "exec": Case(f"exec:true < {UINPUT}", "uinput", "EEXIT", pause_ms=300),  # the shell's open fails
}


@pytest.fixture
def guest(vm_factory):
    vm = vm_factory(kmods=KMODS)
    vm.ssh.upload(minix_image(), "/root/minix.img")
    vm.ssh.run(
        f"/sbin/modprobe -a {' '.join(KMODS)} && losetup /dev/loop0 /root/minix.img && "
        f"mknod {UINPUT} c 10 223 && echo > /proc/sys/kernel/modprobe",
        check=True,
    )
    return vm


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_op_races_an_unload(guest, case):
    c = CASES[case]
    op = ops.parse(c.op)
    common = dict(duration_ms=DURATION_MS, barrier=f"/dev/shm/{case}.bar", parties=2)
    unloader = guest.ssh.start(
        RoleSpec("unloader", c.module, load="modprobe", pause_us=c.pause_ms * 1000, **common).command()
    )
    res = guest.ssh.run(op.role_spec(name=c.module, **common).command(), timeout=120)
    caller = parse_role_output(res.stdout, exit_status=res.exit_status, stderr=res.stderr)
    done = unloader.wait(120)
    unl = parse_role_output(done.stdout, exit_status=done.exit_status, stderr=done.stderr)
    assert caller.error is None and unl.error is None, (caller.error, unl.error)
    assert unl.ops["delete_module"].ok >= 2 and unl.ops["load"].ok == unl.ops["load"].total, (
        f"the unloader must have unloaded and reloaded {c.module}: {unl.ops}"
    )
    st = caller.ops[op.call_op]
    assert st.ok > 0, f"{c.op} never worked with {c.module} loaded: {st.errors}"
    assert st.errors.get(c.gone, 0) > 0, f"{c.op} never failed with {c.gone}: {st.errors}"
    met = st.failed_by_unloads_met
    assert met[1] + met[2] > 0 and st.failed_during_unload > 0, f"no failure met an unload: {met}"
    assert met[0] == 0, f"{met[0]} failures met no unload: the module was there, so the call should have worked"
    calls = caller.events.calls
    assert calls.op == op.call_op and calls.failures and sum(calls.done) == st.total
    assert any(f.errno == c.gone for f in calls.failures)
    if op.undo:
        assert caller.ops[op.undo].total > 0, f"{op.undo} never ran"
