"""Entry points found, not written: the generic ops (`ops.py`) that reach a
module, derived from what the module says and what it does.

What it says: its aliases in the kernel's modules.alias (`fs-*`,
`rtnl-link-*`, `crypto-*`, `net-pf-*`, `devname:*`, `char-major-*`, ...).
What it does: loaded in a guest that holds the kernel's whole module tree,
the difference it makes to the kernel's registries (/proc/filesystems,
/proc/crypto's `module` field, /proc/misc and /dev, /proc/devices,
/proc/net/protocols, its new /proc and debugfs entries).

Each way in is a row: `ALIAS_RULES` turn an alias into candidate ops,
`REGISTRY_RULES` a new registry line, `NAME_RULES` the module's name (nls
tables, which register nowhere, and qdiscs, which had no alias before 6.9).  A candidate may hold alternatives (a
socket of an unknown type: stream, dgram, seqpacket, raw); every candidate is
then called once in the guest with the module loaded (the racer's caller,
`--count 1`) and is kept as reaching the module only if that call succeeded.
A module with no op that reached it gets a `NoOps` reason.  Genetlink
families and netfilter matches are read from the aliases but have no
generic op: they are listed as notes.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from ..errors import HarnessError
from ..guest import fsimages
from ..guest.modtree import module_name
from ..guest.ssh import CommandResult
from ..kernels import KernelFiles
from ..progress import progress
from .ops import MountOp, parse
from .racer import parse_role_output
from .targetrace import mount_dir
from .targets import Kind, TargetRow, image_setup


class NoOps(str, enum.Enum):
    """Why a module has no op that reaches it, in the order they are decided."""

    __str__ = str.__str__

    NO_MODULE = "no such module"
    BUILTIN = "built in"
    IN_USE = "already loaded and in use"  # by the boot, or by a module discovered before it
    CANNOT_LOAD = "cannot load"
    KILLED = "the guest died"  # during its discovery: a later module gets a new guest
    HARDWARE = "needs hardware"
    NOTHING = "registers nothing a generic op reaches"
    UNREACHED = "no derived op reached it"


@dataclass(frozen=True)
class Candidate:
    """One way in: alternative op texts (the first that reaches is kept)."""

    ops: tuple[str, ...]
    source: str  # where it was read: "alias rtnl-link-dummy", "/proc/filesystems"
    kind: Kind
    setup: tuple[str, ...] = ()  # guest lines before the call (an image on a loop device)
    kmods: tuple[str, ...] = ()  # the kernel's modules the setup needs
    cleanup: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """A candidate after its call in the guest: the op tried last, and whether it reached."""

    op: str
    source: str
    kind: Kind
    reached: bool
    errno: str = ""  # the failed call's errno (or the racer's error) when not reached
    setup: tuple[str, ...] = ()
    kmods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Discovery:
    module: str
    entries: tuple[Entry, ...] = ()
    registered: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # what loading it added
    notes: tuple[str, ...] = ()  # a way in without a generic op, a load's error, ...
    why_none: NoOps | None = None  # set when no entry reached it

    @property
    def reaching(self) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.reached)

    def target(self) -> TargetRow | None:
        """A race target of the ops that reached it (None: there are none)."""
        found = self.reaching
        if not found:
            return None
        return TargetRow(
            self.module,
            self.module,
            found[0].kind,
            tuple(e.op for e in found),
            kmods=tuple(dict.fromkeys(k for e in found for k in e.kmods)),
            setup=tuple(dict.fromkeys(s for e in found for s in e.setup)),
            why="derived by discover: " + "; ".join(e.source for e in found),
        )

    def as_json(self) -> dict:
        return {
            "module": self.module,
            "ops": [e.op for e in self.reaching],
            "entries": [
                {"op": e.op, "source": e.source, "kind": e.kind.value, "reached": e.reached, "errno": e.errno}
                for e in self.entries
            ],
            "registered": {k: list(v) for k, v in self.registered.items()},
            "notes": list(self.notes),
            "why_none": self.why_none.value if self.why_none else None,
        }


# --- aliases ---------------------------------------------------------------

SOCKET_TYPES = ("stream", "dgram", "seqpacket", "raw")
# Crypto templates have no algorithm of their own until instantiated: bind
# one around inner algorithms every kernel has (AF_ALG type, full name).
TEMPLATES: dict[str, tuple[str, str]] = {
    **{t: ("skcipher", f"{t}(aes)") for t in ("cbc", "ecb", "ctr", "xts", "lrw", "pcbc", "cfb", "ofb")},
    "cts": ("skcipher", "cts(cbc(aes))"),
    "essiv": ("skcipher", "essiv(cbc(aes),sha256)"),
    "adiantum": ("skcipher", "adiantum(xchacha12,aes)"),
    "hmac": ("hash", "hmac(sha256)"),
    "cmac": ("hash", "cmac(aes)"),
    "xcbc": ("hash", "xcbc(aes)"),
    "vmac64": ("hash", "vmac64(aes)"),
    "cryptd": ("hash", "cryptd(sha256-generic)"),
    "gcm": ("aead", "gcm(aes)"),
    "ccm": ("aead", "ccm(aes)"),
    "rfc4106": ("aead", "rfc4106(gcm(aes))"),
    "rfc4309": ("aead", "rfc4309(ccm(aes))"),
    "rfc7539": ("aead", "rfc7539(chacha20,poly1305)"),
    "authenc": ("aead", "authenc(hmac(sha256),cbc(aes))"),
    "authencesn": ("aead", "authencesn(hmac(sha256),cbc(aes))"),
    "seqiv": ("aead", "seqiv(rfc4106(gcm(aes)))"),
    "echainiv": ("aead", "echainiv(authenc(hmac(sha256),cbc(aes)))"),
    "pcrypt": ("aead", "pcrypt(gcm(aes))"),
}
# Block file systems the guest's busybox can make an image of.
MKFS: dict[str, str] = {"vfat": "mkdosfs", "msdos": "mkdosfs", "ext2": "mke2fs -q", "ext4": "mke2fs -q"}
LOOP = "/dev/loop0"


@dataclass(frozen=True)
class AliasRule:
    """Aliases matching `pattern` give candidates through `make` (None: only a note)."""

    pattern: str
    make: Callable[[re.Match, "Facts"], Candidate | None]
    note: str = ""  # the note for a match without a candidate ("{0}": the alias)


def _socket(family: str, types: Sequence[str], proto: str, source: str) -> Candidate:
    return Candidate(tuple(f"socket:{family}:{t}:{proto}" for t in types), source, Kind.PROTOCOL)


def _crypto(m: re.Match, facts: "Facts") -> Candidate | None:
    name = m["name"]
    if name in facts.crypto_names:  # its own algorithms come from /proc/crypto
        return None
    if name in TEMPLATES:
        atype, full = TEMPLATES[name]
        return Candidate((f"socket:alg:seqpacket:0:{atype}:{full}",), m.string, Kind.CRYPTO)
    return None


def _char_major(m: re.Match, facts: "Facts") -> Candidate | None:
    if facts.devname:  # modules.devname's node is the same device, by name
        return None
    node = f"/dev/harness-{m['major']}-{m['minor']}"
    return Candidate(
        (f"open:{node}",),
        m.string,
        Kind.CHAR,
        setup=(f"mknod {node} c {m['major']} {m['minor']}",),
        cleanup=(f"rm -f {node}",),
    )


# Link kinds whose newlink refuses a link without some IFLA_INFO_DATA
# attributes: the fewest that make one (NetdevOp's data=N/TYPE/VALUE), and
# `:hold=0` where a held link keeps every other caller's from being made.
LINK_DATA: dict[str, str] = {
    # IFLA_GTP_CREATE_SOCKETS: its own UDP sockets, no fds from user space.
    # They bind GTP's fixed ports (2152, 3386), so one link at a time: a held
    # one would fail every other call with EADDRINUSE.
    "gtp": "data=5/u8/1:hold=0",
    "vxlan": "data=1/u32/42",  # IFLA_VXLAN_ID: a VNI
}


def _qdisc(kind: str, source: str) -> Candidate:
    return Candidate((f"qdisc-add:{kind}",), source, Kind.NET)


def _link(m: re.Match, facts: "Facts") -> Candidate:
    extra = LINK_DATA.get(m["kind"])
    return Candidate((f"netdev-add:{m['kind']}" + (f":{extra}" if extra else ""),), m.string, Kind.NET)


ALIAS_RULES: tuple[AliasRule, ...] = (
    AliasRule(r"rtnl-link-(?P<kind>[\w.-]+)", _link),
    # 6.9 on: MODULE_ALIAS_NET_SCH; before, tc asked for "sch_KIND" (NAME_RULES).
    AliasRule(r"net-sch-(?P<kind>[\w-]+)", lambda m, f: _qdisc(m["kind"], m.string)),
    AliasRule(
        r"net-pf-(?P<pf>\d+)-proto-(?P<proto>\d+)-type-(?P<type>\d+)",
        lambda m, f: _socket(m["pf"], (m["type"],), m["proto"], m.string),
    ),
    AliasRule(r"net-pf-16-proto-16-family-(?P<name>.+)", lambda m, f: None, "genetlink family {name}: no generic op"),
    AliasRule(
        r"net-pf-(?P<pf>\d+)-proto-(?P<proto>\d+)", lambda m, f: _socket(m["pf"], SOCKET_TYPES, m["proto"], m.string)
    ),
    AliasRule(r"net-pf-(?P<pf>\d+)", lambda m, f: _socket(m["pf"], SOCKET_TYPES, "0", m.string)),
    AliasRule(r"can-proto-(?P<proto>\d+)", lambda m, f: _socket("can", ("raw", "dgram"), m["proto"], m.string)),
    AliasRule(r"crypto-(?P<name>.+)", _crypto),
    AliasRule(r"devname:(?P<name>.+)", lambda m, f: Candidate((f"open:/dev/{m['name']}",), m.string, Kind.CHAR)),
    AliasRule(r"char-major-(?P<major>\d+)-(?P<minor>\d+)", _char_major),
    AliasRule(
        r"(?P<name>nfnetlink-subsys-\d+|nft-.+|ipt?_.+|ip6t_.+|ebt_.+|nf_.+)",
        lambda m, f: None,
        "netfilter {name}: no generic op",
    ),
    AliasRule(r"tcp-(?P<name>.+)", lambda m, f: None, "TCP congestion control {name}: no generic op"),
)


@dataclass(frozen=True)
class NameRule:
    """A module whose name matches `pattern` is reached through `make`:
    modules that register in no registry and have no alias (nls tables)."""

    pattern: str
    make: Callable[[re.Match], Candidate]


def _vfat_with(option: str, source: str) -> Candidate:
    return Candidate(
        (f"mount:{LOOP}:vfat:{option}",),
        source,
        Kind.FILESYSTEM,
        setup=image_setup(MKFS["vfat"], LOOP),
        kmods=("loop", "vfat"),
        cleanup=(f"losetup -d {LOOP}",),
    )


# AF_ALG's types register with af_alg, in no registry: a bind of each type.
ALGIF: dict[str, str] = {
    "algif_hash": "hash:sha256",
    "algif_skcipher": "skcipher:cbc(aes)",
    "algif_aead": "aead:gcm(aes)",
    "algif_rng": "rng:stdrng",
}

NAME_RULES: tuple[NameRule, ...] = (
    NameRule(
        "|".join(ALGIF), lambda m: Candidate((f"socket:alg:seqpacket:0:{ALGIF[m[0]]}",), "AF_ALG's type", Kind.CRYPTO)
    ),
    # fat's load_nls("cp%d") for codepage=, load_nls(NAME) for iocharset=.
    NameRule(r"nls_cp(?P<n>\d{3})", lambda m: _vfat_with(f"codepage={m['n']}", "nls: vfat's codepage")),
    NameRule(
        r"nls_(?P<name>.+)", lambda m: _vfat_with(f"iocharset={m['name'].replace('_', '-')}", "nls: vfat's iocharset")
    ),
    # A qdisc module is sch_KIND (ingress's also gives clsact): tc's own
    # request_module("sch_%s") before 6.9's net-sch- aliases.
    NameRule(r"sch_(?P<kind>\w+)", lambda m: _qdisc(m["kind"], "qdisc: sch_KIND")),
)
# A bus's device table (pci:, usb:, acpi*:, of:, ...): the module drives hardware.
HARDWARE_ALIAS = re.compile(r"^(?!devname:)[\w-]+:")


# --- what loading it registers --------------------------------------------

# The guest's registries, one section each; the snapshot prints them between
# "@@NAME" lines.  A /proc or debugfs entry is "f PATH" (a file) or "d PATH".
SECTIONS: dict[str, str] = {
    "filesystems": "cat /proc/filesystems",
    "misc": "cat /proc/misc",
    "dev": 'for f in /dev/* /dev/*/*; do if [ -c "$f" ]; then echo "c $f"; elif [ -b "$f" ]; then echo "b $f"; fi; done',
    "devices": "cat /proc/devices",
    "protocols": "awk 'NR>1 {print $1}' /proc/net/protocols",
    "proc": 'for f in /proc/* /proc/net/* /proc/fs/*; do case "${f#/proc/}" in [0-9]*|self|thread-self) continue;; '
    'esac; [ -f "$f" ] && echo "f $f"; done',
    "debugfs": 'for f in /sys/kernel/debug/* /sys/kernel/debug/*/*; do [ -f "$f" ] && echo "f $f"; done',
}


@dataclass(frozen=True)
class RegistryRule:
    """A new line of `section` matching `pattern` gives a candidate through `make` (None: only listed,
    with `note` if it has one)."""

    section: str
    pattern: str
    make: Callable[[re.Match], Candidate | None]
    note: str = ""


def _filesystem(m: re.Match) -> Candidate | None:
    name = m["name"]
    if m["nodev"]:
        return Candidate((f"mount:none:{name}",), "/proc/filesystems", Kind.FILESYSTEM)
    if name in fsimages.BUILDERS:  # made on the host, in every guest; mounted read-only
        return Candidate(
            (f"mount:{LOOP}:{name}:ro",),
            "/proc/filesystems",
            Kind.FILESYSTEM,
            setup=(f"losetup {LOOP} {fsimages.guest_path(name)}",),
            kmods=("loop",),
            cleanup=(f"losetup -d {LOOP}",),
        )
    if name not in MKFS:
        return Candidate(
            (f"mount:{LOOP}:{name}",),
            f"/proc/filesystems (no mkfs for {name}: an empty image)",
            Kind.FILESYSTEM,
            setup=_blank(LOOP),
            kmods=("loop",),
            cleanup=(f"losetup -d {LOOP}",),
        )
    return Candidate(
        (f"mount:{LOOP}:{name}",),
        "/proc/filesystems",
        Kind.FILESYSTEM,
        setup=image_setup(MKFS[name], LOOP),
        kmods=("loop",),
        cleanup=(f"losetup -d {LOOP}",),
    )


def _blank(loop: str) -> tuple[str, ...]:
    return image_setup("true", loop)


REGISTRY_RULES: tuple[RegistryRule, ...] = (
    RegistryRule("filesystems", r"(?P<nodev>nodev)?\s+(?P<name>\S+)", _filesystem),
    # Opening a watchdog arms it, and a close without its magic character
    # leaves it running: softdog rebooted a 6.12 discovery 60 s later.
    RegistryRule(
        "dev",
        r"c (?P<path>/dev/watchdog\d*)",
        lambda m: None,
        "{path}: not opened (an open arms the watchdog, which then reboots the guest)",
    ),
    RegistryRule("dev", r"c (?P<path>/dev/\S+)", lambda m: Candidate((f"open:{m['path']}",), "/dev", Kind.CHAR)),
    RegistryRule(
        "dev", r"b (?P<path>/dev/\S+)", lambda m: Candidate((f"open:{m['path']}:read=4096",), "/dev", Kind.BLOCK)
    ),
    RegistryRule(
        "proc", r"f (?P<path>/proc/\S+)", lambda m: Candidate((f"open:{m['path']}:read=4096",), "/proc", Kind.CHAR)
    ),
    RegistryRule(
        "debugfs", r"f (?P<path>\S+)", lambda m: Candidate((f"open:{m['path']}:read=4096",), "debugfs", Kind.CHAR)
    ),
    RegistryRule("misc", r"\s*\d+ (?P<name>\S+)", lambda m: None),
    RegistryRule("devices", r".*", lambda m: None),
    RegistryRule("protocols", r".*", lambda m: None),
)
# /proc/crypto's types, as AF_ALG binds them ("cipher": a bare block cipher, wrapped in ecb).
ALG_TYPES: dict[str, tuple[str, str]] = {
    "shash": ("hash", "{}"),
    "ahash": ("hash", "{}"),
    "skcipher": ("skcipher", "{}"),
    "lskcipher": ("skcipher", "{}"),
    "cipher": ("skcipher", "ecb({})"),
    "aead": ("aead", "{}"),
    "rng": ("rng", "{}"),
}


@dataclass(frozen=True)
class CryptoAlg:
    name: str
    driver: str
    module: str
    type: str
    internal: bool


def parse_crypto(text: str) -> list[CryptoAlg]:
    """/proc/crypto's blocks ("key : value" lines, a blank line between)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        d: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            if key.strip():
                d[key.strip()] = value.strip()
        if "name" in d and "module" in d:
            out.append(
                CryptoAlg(
                    d["name"], d.get("driver", d["name"]), d["module"], d.get("type", ""), d.get("internal") == "yes"
                )
            )
    return out


def crypto_candidates(algs: Iterable[CryptoAlg], module: str) -> tuple[list[Candidate], list[str]]:
    """The module's own algorithms, bound by driver name so that no other
    module's implementation answers; those AF_ALG cannot bind are notes."""
    cands, notes = [], []
    for alg in algs:
        if alg.module != module or alg.internal:
            continue
        if alg.type not in ALG_TYPES:
            notes.append(f"crypto {alg.driver} ({alg.type}): AF_ALG cannot bind it")
            continue
        atype, wrap = ALG_TYPES[alg.type]
        name = wrap.format(alg.driver)
        cands.append(Candidate((f"socket:alg:seqpacket:0:{atype}:{name}",), "/proc/crypto", Kind.CRYPTO))
    return cands, notes


# --- the host's facts and the guest's snapshot ----------------------------


@dataclass(frozen=True)
class Facts:
    """What the kernel's files and the guest's /proc/crypto say of one module."""

    aliases: tuple[str, ...] = ()
    devname: tuple[str, ...] = ()  # modules.devname's nodes
    crypto_names: frozenset[str] = frozenset()  # names and drivers of its own algorithms


def module_aliases(modules_dir: Path) -> dict[str, list[str]]:
    """modules.alias by module (with modules.devname's nodes as devname: aliases)."""
    out: dict[str, list[str]] = {}
    path = modules_dir / "modules.alias"
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else ():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            out.setdefault(parts[2], []).append(parts[1])
    return out


def module_devnames(modules_dir: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    path = modules_dir / "modules.devname"
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else ():
        parts = line.split()
        if len(parts) == 3 and not line.startswith("#"):
            out.setdefault(parts[0], []).append(parts[1])
    return out


def snapshot_script() -> str:
    return "; ".join(f"echo @@{name}; {{ {cmd}; }} 2>/dev/null" for name, cmd in SECTIONS.items())


def parse_sections(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in text.splitlines():
        if line.startswith("@@") and line[2:] in SECTIONS:
            current = out.setdefault(line[2:], set())
        elif current is not None and line.strip():
            current.add(line.rstrip())
    return out


def added(before: Mapping[str, set[str]], after: Mapping[str, set[str]]) -> dict[str, tuple[str, ...]]:
    """What loading added to each section, sorted; sections it left alone are absent."""
    out = {}
    for name in SECTIONS:
        new = sorted(after.get(name, set()) - before.get(name, set()))
        if name == "dev":
            new = _first_of_each(new)
        if new:
            out[name] = tuple(new)
    return out


def _first_of_each(lines: Sequence[str]) -> list[str]:
    """/dev/ram0../dev/ram15 is one device kind: keep the lowest-numbered of each."""
    seen: dict[str, str] = {}
    for line in sorted(lines, key=lambda s: (re.sub(r"\d+$", "", s), len(s), s)):
        seen.setdefault(re.sub(r"\d+$", "", line), line)
    return sorted(seen.values())


def candidates(
    module: str, facts: Facts, registered: Mapping[str, tuple[str, ...]], algs: Sequence[CryptoAlg]
) -> tuple[list[Candidate], list[str]]:
    """Every candidate and every note, registry first; one op text once."""
    cands: list[Candidate] = []
    notes: list[str] = []
    for section, lines in registered.items():
        for line in lines:
            for rule in REGISTRY_RULES:
                m = re.fullmatch(rule.pattern, line) if rule.section == section else None
                if m:
                    c = rule.make(m)
                    if c:
                        cands.append(c)
                    elif rule.note:
                        notes.append(rule.note.format(**m.groupdict()))
                    break
    crypto, crypto_notes = crypto_candidates(algs, module)
    cands += crypto
    notes += crypto_notes
    for alias in facts.aliases:
        for arule in ALIAS_RULES:
            m = re.fullmatch(arule.pattern, alias)
            if m:
                c = arule.make(m, facts)
                if c:
                    cands.append(c)
                elif arule.note:
                    notes.append(arule.note.format(**m.groupdict()))
                break
    for nrule in NAME_RULES:
        nm = re.fullmatch(nrule.pattern, module)
        if nm:
            cands.append(nrule.make(nm))
            break
    seen: set[str] = set()
    unique = []
    for c in cands:
        if not seen.intersection(c.ops):
            unique.append(c)
            seen.update(c.ops)
    return unique, list(dict.fromkeys(notes))


# --- in the guest -------------------------------------------------------


class Shell(Protocol):
    """What discover needs of a guest: run a shell line, get its result."""

    def run(self, command: str, timeout: float | None = 300) -> CommandResult: ...


PROBE_MS = 10000  # one call's longest wait (a mount under a debug kernel)


def probe(ssh: Shell, module: str, cand: Candidate) -> Entry:
    """Call each alternative once with the module loaded; the first that succeeds reaches."""
    if cand.kmods:
        ssh.run("/sbin/modprobe -a " + " ".join(cand.kmods), timeout=120)
    for line in cand.setup:
        res = ssh.run(line, timeout=120)
        if not res.ok:
            return Entry(cand.ops[0], cand.source, cand.kind, False, f"setup `{line}` failed", cand.setup, cand.kmods)
    errno = ""
    op_text = cand.ops[0]
    try:
        for op_text in cand.ops:
            op = parse(op_text)
            where = mount_dir(0) if isinstance(op, MountOp) else None
            spec = op.role_spec(name=module, count=1, duration_ms=PROBE_MS, dir=where)
            res = ssh.run(f"mkdir -p {mount_dir(0)}; " + shlex.join(spec.argv()), timeout=PROBE_MS / 1000 + 60)
            role = parse_role_output(res.stdout, spec.role, res.exit_status, res.stderr)
            stats = role.ops.get(op.call_op)
            if stats is not None and stats.ok > 0:
                return Entry(op.text, cand.source, cand.kind, True, "", cand.setup, cand.kmods)
            errno = role.error or (", ".join(sorted(stats.errors)) if stats else "no call")
    finally:
        for line in cand.cleanup:
            ssh.run(line, timeout=60)
    return Entry(parse(op_text).text, cand.source, cand.kind, False, errno, cand.setup, cand.kmods)


def hardware_only(facts: Facts) -> bool:
    """Every alias it has binds it to a device (pci:, usb:, acpi*:, of:, ...):
    a driver of hardware, which the guest does not have."""
    return bool(facts.aliases) and all(HARDWARE_ALIAS.match(a) for a in facts.aliases)


def discover_one(ssh: Shell, module: str, state: str | None, facts: Facts, load_hardware: bool = False) -> Discovery:
    """Load `module` in the guest, read what it registered, call each candidate,
    unload it.  A driver with hardware aliases only is not loaded unless
    `load_hardware`: almost half of Debian's 6.12 modules (1962 of 4230) are
    such drivers, and loading each cost discover seconds to learn that it
    registers nothing."""
    if state is None:
        return Discovery(module, why_none=NoOps.NO_MODULE)
    if state == "builtin":
        return Discovery(module, why_none=NoOps.BUILTIN)
    q = shlex.quote(module)
    loaded = ssh.run(f"grep -q '^{module} ' /proc/modules", timeout=30).ok
    if loaded and not ssh.run(f"/sbin/modprobe -r {q}", timeout=120).ok:
        line = ssh.run(f"grep '^{module} ' /proc/modules", timeout=30).stdout.split()
        refs = f"refcount {line[2]}" if len(line) > 2 else "loaded"
        return Discovery(module, notes=(f"already loaded, {refs}",), why_none=NoOps.IN_USE)
    if not load_hardware and hardware_only(facts):
        kinds = sorted({a.split(":", 1)[0] for a in facts.aliases})
        return Discovery(
            module, notes=(f"only hardware aliases ({', '.join(kinds)}): not loaded",), why_none=NoOps.HARDWARE
        )
    snap = snapshot_script()
    # Its dependencies (soft ones too) first: what they register is theirs, not the module's.
    deps = (
        f"/sbin/modprobe --show-depends {q} 2>/dev/null | awk '$1 == \"insmod\" {{print $2}}' "
        f"| sed 's,.*/,,; s,\\.ko.*,,' | tr - _ | grep -vx {q} | xargs -r /sbin/modprobe -a"
    )
    res = ssh.run(f'{deps}; {snap}; echo @@@load; /sbin/modprobe {q} 2>&1; echo "@@@rc $?"; {snap}', timeout=300)
    before_text, _, rest = res.stdout.partition("@@@load\n")
    load_out, _, after_text = rest.partition("@@@rc ")
    rc, _, after_text = after_text.partition("\n")
    if rc.strip() != "0":
        return Discovery(
            module, notes=tuple(load_out.strip().splitlines()[-1:] or ["modprobe failed"]), why_none=NoOps.CANNOT_LOAD
        )
    registered = added(parse_sections(before_text), parse_sections(after_text))
    algs = parse_crypto(ssh.run("cat /proc/crypto", timeout=60).stdout)
    facts = Facts(
        facts.aliases, facts.devname, frozenset(n for a in algs if a.module == module for n in (a.name, a.driver))
    )
    cands, notes = candidates(module, facts, registered, algs)
    entries = tuple(probe(ssh, module, c) for c in cands)
    if not ssh.run(f"/sbin/modprobe -r {q}", timeout=120).ok:
        notes.append("cannot be unloaded after the calls (in use)")
    why = None
    if not any(e.reached for e in entries):
        hardware = [a for a in facts.aliases if HARDWARE_ALIAS.match(a)]
        why = NoOps.UNREACHED if entries else NoOps.HARDWARE if hardware and not registered else NoOps.NOTHING
    return Discovery(module, entries, registered, tuple(notes), why)


def facts_of(modules_dir: Path, modules: Sequence[str]) -> dict[str, Facts]:
    aliases, devnames = module_aliases(modules_dir), module_devnames(modules_dir)
    out = {}
    for m in modules:
        name = m.replace("-", "_")
        nodes = devnames.get(name, [])
        out[name] = Facts(
            tuple(aliases.get(name, ()))
            + tuple(f"devname:{n}" for n in nodes if f"devname:{n}" not in aliases.get(name, ())),
            tuple(nodes),
        )
    return out


# A guest that reset itself says so last (a watchdog, a driver that pokes the
# reset port, a panic); a splat from long before is not why it died.
_RESET_LINE = re.compile(r"^\[\s*\d+\.\d+\] (.*(?:system reboot|Restarting system|Kernel panic).*)$", re.M)


def death_cause(console: str) -> str:
    """Why a guest died, from its console: a reset it announced in its last
    lines, else its last splat."""
    from ..guest.splat import parse as parse_splats

    resets = _RESET_LINE.findall(console[-4000:])
    if resets:
        return resets[-1].strip()
    splats = parse_splats(console)
    return f"{splats[-1].kind}: {splats[-1].title}" if splats else "no splat on the console"


def run(
    kfiles: KernelFiles,
    names: Sequence[str],
    accel: str = "auto",
    each: Callable[[Discovery], None] | None = None,
    load_hardware: bool = False,
) -> list[Discovery]:
    """Every module of `names` discovered in turn in a guest of the kernel,
    which holds its whole module tree; `each` sees each result as it is done.
    A guest that dies (a legacy driver that pokes ports no machine here has,
    a warning on a panic_on_warn kernel) ends its module as `the guest died`,
    and the rest go on in a new guest: a discovery of thousands of modules
    is not lost to one of them."""
    from ..guest.image import build_image
    from ..guest.modtree import module_state
    from ..guest.vm import Vm, VmConfig

    facts = facts_of(kfiles.modules_dir, names)
    image = build_image(kfiles)
    if image.modtree is None:
        raise HarnessError(f"kernel {kfiles.name}: its guest has no module tree (see above); discover needs it")
    found: list[Discovery] = []
    todo = list(names)
    while todo:
        with Vm(image, VmConfig(accel=accel)) as vm:
            while todo:
                name = todo.pop(0)
                progress(f"discover {kfiles.name}: {name} ({len(found) + 1}/{len(names)})")
                one = discover_one(vm.ssh, name, module_state(kfiles, name), facts[name], load_hardware)
                died = not vm.ssh.alive()
                if died:
                    cause = death_cause(vm.console_text())
                    said = f"the guest died discovering {name} ({cause}); console log: {vm.log_path}"
                    progress(f"discover {kfiles.name}: {said}" + ("; a new guest for the rest" if todo else ""))
                    one = Discovery(name, notes=(said,), why_none=NoOps.KILLED)
                found.append(one)
                if each:
                    each(one)
                if died:
                    break
    return found


def derive_row(kfiles: KernelFiles, name: str, accel: str = "auto") -> TargetRow:
    """A race target for a kernel module that has no row: its derived ops, or one line saying why it has none."""
    (found,) = run(kfiles, [name], accel)
    row = found.target()
    if row is None:
        raise HarnessError(f"target {name} on {kfiles.name}: {why_not(found)}; give its callers with --op")
    progress(f"target {name}: derived ops " + " ".join(row.ops))
    return row


def why_not(found: Discovery) -> str:
    """One line: why no op reaches the module, with what was tried and noted."""
    tried = "; ".join(f"{e.op}: {e.errno or 'failed'}" for e in found.entries)
    said = "; ".join(found.notes)
    return (
        f"no op reaches it ({found.why_none})" + (f"; tried {tried}" if tried else "") + (f"; {said}" if said else "")
    )


def render(found: Sequence[Discovery]) -> str:
    """The text `discover` prints: per module its ops, or why there are none."""
    lines = []
    for d in found:
        if d.reaching:
            lines.append(f"{d.module}: " + " ".join(shlex.quote(e.op) for e in d.reaching))
        else:
            lines.append(f"{d.module}: none ({d.why_none})")
        for e in d.entries:
            mark = "reached" if e.reached else f"not reached: {e.errno or 'failed'}"
            lines.append(f"  {e.op}  [{e.source}; {mark}]")
        for section, new in d.registered.items():
            if section not in ("dev", "proc", "debugfs", "filesystems"):
                lines.append(f"  registered in {section}: {', '.join(s.strip() for s in new)}")
        lines += [f"  note: {n}" for n in d.notes]
    return "\n".join(lines)


def summary(found: Sequence[Discovery]) -> list[str]:
    """The counts `discover` ends with: the modules with ops per kind (a
    module's kind is that of the first op that reached it), the rest per
    reason, each in its enum's order."""
    kinds = Counter(d.reaching[0].kind for d in found if d.reaching)
    whys = Counter(d.why_none for d in found if not d.reaching and d.why_none)
    with_ops = sum(kinds.values())
    lines = [f"{with_ops} of {len(found)} modules have ops that reach them"]
    if kinds:
        lines.append("  by kind: " + ", ".join(f"{k} {kinds[k]}" for k in Kind if kinds[k]))
    if whys:
        lines.append("  the rest: " + ", ".join(f"{w} {whys[w]}" for w in NoOps if whys[w]))
    return lines


def to_json(found: Sequence[Discovery]) -> str:
    return json.dumps([d.as_json() for d in found], indent=2) + "\n"


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m[1]) <= int(m[2]):
        raise HarnessError(f"--shard wants I/N with 1 <= I <= N (2/4: the second of four), got {text!r}")
    return int(m[1]), int(m[2])


def shard(names: Sequence[str], which: tuple[int, int] | None) -> list[str]:
    """The I-th of N slices of the names in sorted order (every N-th from the I-th): slices of
    similar mixes, whose union is the whole and which never overlap."""
    ordered = sorted(names)
    if which is None:
        return ordered
    i, n = which
    return ordered[i - 1 :: n]


def loadable(modules_dir: Path, under: Sequence[str] = ()) -> list[str]:
    """Every loadable module of a kernel by name (modules.dep), or those whose
    path starts with one of `under` (`kernel/fs`, `kernel/net/can`)."""
    out = []
    path = modules_dir / "modules.dep"
    for line in path.read_text().splitlines() if path.is_file() else ():
        rel = line.partition(":")[0]
        if not under or any(rel.startswith(u.rstrip("/") + "/") for u in under):
            out.append(module_name(rel))
    return sorted(set(out))


def check_names(modules: Sequence[str]) -> list[str]:
    out = []
    for m in modules:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,56}", m):
            raise HarnessError(f"{m!r} is not a module name")
        out.append(m.replace("-", "_"))
    return list(dict.fromkeys(out))
