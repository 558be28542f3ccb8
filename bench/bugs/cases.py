"""The bug benchmark's cases, one row each: a patch under patches/<release>/
that puts an unload bug into a debug kernel, and the race target (a
ready-made one, or this folder's pyproject.toml's) whose callers should
catch it.

`upstream` cases put back a real bug fixed upstream: the fix reverted, or
its essence undone in today's code; `cite` names the fix.  `broken` cases
break a real module on purpose, the way such bugs are written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str  # patches/<release>/<name>.patch
    kind: str  # "upstream" or "broken"
    release: str  # the debug kernel it patches: bugs-<release>
    target: str  # race --target
    what: str  # the bug: which rule the patch breaks
    cite: str = ""  # upstream: the fix's title (commit, version)
    args: tuple[str, ...] = ()  # more race options (the guest packages its callers run)


CASES: tuple[Case, ...] = (
    # ---- upstream unload bugs put back
    Case(
        "upstream-tap-cdev-owner",
        "upstream",
        "6.12",
        "macvtap",
        "the macvtap cdev has no owner: an open /dev/tapN does not pin macvtap",
        '"tap: reference to KVA of an unloaded module causes kernel panic" (dea6e19f4ef7, v4.15)',
    ),
    Case(
        "upstream-gtp-newlink",
        "upstream",
        "6.12",
        "gtp",
        "link ops registered before the pernet ops: a newlink during the load meets no per-net state",
        '"gtp: fix use-after-free and null-ptr-deref in gtp_newlink()" (616d82c3cfa2, v6.8)',
    ),
    Case(
        "upstream-netdevsim-debugfs-owner",
        "upstream",
        "6.12",
        "netdevsim",
        "debugfs file_operations without .owner: an open debugfs file does not pin netdevsim",
        '"netdevsim: set .owner to THIS_MODULE" (a5bbcbf29089, v5.10)',
    ),
    Case(
        "upstream-xt-trace-ipv6-owner",
        "upstream",
        "6.12",
        "xt_TRACE",
        "the IPv6 TRACE target without .me: an ip6tables rule does not pin xt_TRACE",
        '"netfilter: xtables: fix typo causing some targets not to load on IPv6" (306ed1728e84, v6.12-rc5)',
        args=("--guest-packages", "iptables"),
    ),
    Case(
        "upstream-proc-get-inode",
        "upstream",
        "6.12",
        "pktgen",
        "proc_get_inode() reads the module's proc_ops, which an unload frees under it",
        '"proc: fix UAF in proc_get_inode()" (654b33ada4ab, v6.14)',
    ),
    Case(
        "upstream-vsock-transport-toctou",
        "upstream",
        "6.12",
        "vhost_vsock",
        "the local-CID ioctl reads a transport pointer twice without the register mutex",
        '"vsock: Fix transport_{g2h,h2g} TOCTOU" (209fd720838a, v6.16)',
    ),
    # ---- real modules broken on purpose
    Case("broken-uhid-fops-owner", "broken", "6.12", "uhid", "misc file_operations without .owner"),
    Case("broken-uinput-fops-owner", "broken", "6.12", "uinput", "misc file_operations without .owner"),
    Case("broken-ppp-fops-owner", "broken", "6.12", "ppp_generic", "char file_operations without .owner"),
    Case("broken-configfs-fstype-owner", "broken", "6.12", "configfs", "file_system_type without .owner"),
    Case("broken-vfat-fstype-owner", "broken", "6.12", "vfat", "file_system_type without .owner"),
    Case("broken-md4-cra-module", "broken", "6.12", "md4", "crypto algorithm without .cra_module"),
    Case("broken-rmd160-cra-module", "broken", "6.12", "rmd160", "crypto algorithm without .cra_module"),
    Case("broken-af-key-proto-owner", "broken", "6.12", "af_key", "proto and proto_ops without .owner"),
    Case("broken-can-raw-proto-owner", "broken", "6.12", "can_raw", "proto without .owner"),
    Case(
        "broken-bonding-exit-order",
        "broken",
        "6.12",
        "bonding",
        "the exit frees its per-net state before it unregisters its link ops",
    ),
)
