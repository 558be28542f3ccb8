"""Race targets: real modules whose unload is raced against their users.

The seed's question, asked of any module: can a caller that is inside a
module, or about to enter it, survive that module being unloaded?  A target
row is one module with what its guest needs first and the generic caller
operations (`ops.py`) that reach it; a new target is a new row.  Every row's
module is `=m` on Debian's stock kernels and in the debug kernel's fragment
(kconfigs/debug.config).

What a clean run looks like is the same for every row: no splat, every
role's result, unloads done; callers fail while the module is gone (ENOENT,
ENODEV, EAFNOSUPPORT: what the kernel's refcount does), which the report
counts as facts, never as failures.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import HarnessError
from ..project import table as harness_table


class Kind(str, enum.Enum):
    __str__ = str.__str__

    FILESYSTEM = "filesystem"
    BLOCK = "block"
    NET = "net"
    CHAR = "char/misc"
    CRYPTO = "crypto"
    PROTOCOL = "protocol"


# A loop-device image made with the guest's own busybox: ROWS' setup lines.
def image_setup(mkfs: str, loop: str, size_mb: int = 8) -> tuple[str, ...]:
    img = f"/tmp/{loop.rsplit('/', 1)[-1]}.img"
    return (
        f"dd if=/dev/zero of={img} bs=1M count={size_mb} 2>/dev/null",
        f"losetup {loop} {img}",
        f"{mkfs} {loop} >/dev/null",
    )


@dataclass(frozen=True)
class TargetRow:
    """One real module to unload, its guest setup and the callers that reach it."""

    name: str  # --target NAME
    module: str  # the module the unloader unloads (its dependencies stay loaded)
    kind: Kind
    ops: tuple[str, ...]  # caller operations (ops.py text), one role each
    kmods: tuple[str, ...] = ()  # the kernel's modules the setup needs besides the target
    setup: tuple[str, ...] = ()  # guest shell lines, run once after those are loaded
    params: str = ""  # the target's module parameters (every load)
    why: str = ""  # what the callers exercise, for the docs and the survey
    # A module folder built for the kernel, not an in-tree module: under kmods/
    # for a ready-made row, an absolute path for a project's.
    source: str | None = None
    control: bool = False  # it breaks the golden rule: a run that does not crash proves nothing

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TargetRow":
        """A row to_json wrote (a survey's derived rows); KeyError/ValueError when it is not one."""
        tup = ("ops", "kmods", "setup")
        return cls(**{**d, "kind": Kind(d["kind"]), **{k: tuple(str(x) for x in d[k]) for k in tup if k in d}})


ROWS: Mapping[str, TargetRow] = {
    r.name: r
    for r in (
        # Its default codepage and character sets are modules on Debian's kernels.
        TargetRow(
            "vfat",
            "vfat",
            Kind.FILESYSTEM,
            ("mount:/dev/loop0:vfat",),
            kmods=("loop", "fat", "nls_cp437", "nls_ascii", "nls_utf8"),
            setup=image_setup("mkdosfs", "/dev/loop0"),
            why="mount(2) finds the file system type by name (get_fs_type, try_module_get)",
        ),
        # ext4 asks the crypto API for crc32c at mount time: a module on Debian's kernels.
        TargetRow(
            "ext4",
            "ext4",
            Kind.FILESYSTEM,
            ("mount:/dev/loop1:ext2",),
            kmods=("loop", "jbd2", "mbcache", "crc32c_generic"),
            setup=image_setup("mke2fs -q", "/dev/loop1"),
            why="an ext2 image mounted by ext4 (CONFIG_EXT4_USE_FOR_EXT2)",
        ),
        TargetRow(
            "configfs",
            "configfs",
            Kind.FILESYSTEM,
            ("mount:none:configfs",),
            why="a file system with no device: mount, then umount",
        ),
        TargetRow(
            "null_blk",
            "null_blk",
            Kind.BLOCK,
            ("open:/dev/nullb0:read=4096",),
            why="a block device opened and read (blkdev_get, the disk's owner)",
        ),
        TargetRow(
            "brd",
            "brd",
            Kind.BLOCK,
            ("open:/dev/ram0:read=4096",),
            params="rd_nr=1 rd_size=4096",
            why="a RAM disk opened and read",
        ),
        TargetRow(
            "dummy",
            "dummy",
            Kind.NET,
            ("netdev-add:dummy",),
            why="rtnetlink's link ops by kind (rtnl_link_ops_get, request_module)",
        ),
        TargetRow("nlmon", "nlmon", Kind.NET, ("netdev-add:nlmon",), why="another rtnl_link_ops driver"),
        TargetRow(
            "uinput",
            "uinput",
            Kind.CHAR,
            ("open:/dev/uinput",),
            why="a misc device opened (misc_open, fops_get of .owner)",
        ),
        TargetRow(
            "md4",
            "md4",
            Kind.CRYPTO,
            ("socket:alg:seqpacket:0:hash:md4",),
            kmods=("algif_hash",),
            why="an AF_ALG bind looks the algorithm up (crypto_alg_mod_lookup, request_module)",
        ),
        TargetRow(
            "algif_hash",
            "algif_hash",
            Kind.CRYPTO,
            ("socket:alg:seqpacket:0:hash:sha256",),
            why="AF_ALG's hash type itself (af_alg_get_type, try_module_get)",
        ),
        # Not af_key: pfkey_release() waits for an RCU grace period, so with a
        # caller or two a PF_KEY socket is always open and it is never unloaded.
        TargetRow(
            "can_bcm",
            "can_bcm",
            Kind.PROTOCOL,
            ("socket:can:dgram:2",),
            kmods=("can",),
            why="CAN's broadcast manager protocol (can_get_proto, try_module_get)",
        ),
        TargetRow(
            "can_raw",
            "can_raw",
            Kind.PROTOCOL,
            ("socket:can:raw:1",),
            kmods=("can",),
            why="a protocol of a family (can_get_proto, try_module_get)",
        ),
        # The negative control: a misc device whose fops have no .owner; a read
        # sleeping in it across the unload wakes in freed text (kmods/targets/noowner).
        TargetRow(
            "noowner",
            "harness_noowner",
            Kind.CHAR,
            ("open:/dev/harness_noowner:read=64",),
            source="targets/noowner",
            control=True,
            why="the golden rule broken: nothing pins the module while a read sleeps in it",
        ),
    )
}


def project_targets(project: Path | None = None) -> dict[str, TargetRow]:
    """The targets a project defines in its pyproject.toml, rows like ROWS':

    [tool.harness.targets.uhid]
    module = "uhid"
    kind = "char/misc"
    ops = ["open:/dev/uhid"]
    kmods = []              # the kernel's modules the setup needs
    setup = []              # guest shell lines, once, after those are loaded
    params = ""             # the target's module parameters
    why = "..."
    """
    path, table = harness_table(project or Path.cwd(), "targets")
    out: dict[str, TargetRow] = {}
    for name, d in table.items():
        where = f"{path} [tool.harness.targets.{name}]"
        if name in ROWS:
            raise HarnessError(f"{where}: {name} is a ready-made target; give it another name")
        if not isinstance(d, dict) or set(d) - _PROJECT_KEYS or not {"module", "ops"} <= set(d):
            raise HarnessError(
                f"{where}: wants module and ops, optionally {', '.join(sorted(_PROJECT_KEYS - {'module', 'ops'}))}"
            )
        try:
            kind = Kind(d.get("kind", Kind.CHAR.value))
        except ValueError:
            raise HarnessError(f"{where}: kind is one of {', '.join(k.value for k in Kind)}") from None
        lists = {k: d.get(k, []) for k in ("ops", "kmods", "setup")}
        if (
            not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists.values())
            or not lists["ops"]
        ):
            raise HarnessError(f"{where}: ops (at least one), kmods and setup are lists of strings")
        out[name] = TargetRow(
            name,
            str(d["module"]),
            kind,
            tuple(lists["ops"]),
            kmods=tuple(lists["kmods"]),
            setup=tuple(lists["setup"]),
            params=str(d.get("params", "")),
            why=str(d.get("why", "")),
            source=str(path.parent / str(d["source"])) if "source" in d else None,
        )
    return out


_PROJECT_KEYS = {"module", "kind", "ops", "kmods", "setup", "params", "why", "source"}


def find(name: str) -> TargetRow | None:
    """A ready-made row, or one the project (the working folder) defines; None: neither."""
    return ROWS.get(name) or project_targets().get(name)


def names() -> list[str]:
    return [*ROWS, *project_targets()]


def get_target(name: str) -> TargetRow:
    row = find(name)
    if row is None:
        raise HarnessError(
            f"unknown target {name!r}; ready-made: {', '.join(names())} (or a .ko path or a module folder)"
        )
    return row
