"""Generic caller operations: a caller of any module, not only of the
harness's own template modules, run by the racer's `caller` role.

A user names an operation in one line of text; `parse` turns it into one
typed row (an `Op` subclass per kind) and `Op.role_spec` into the racer's
command line (`RoleSpec` with `Role.CALLER`):

    open:PATH[:read=N][:mode=r|w|rw]      open (O_NONBLOCK), read N bytes, close
    ioctl:PATH:REQUEST[:mode=r|w|rw]      open, ioctl(REQUEST, zeroed buffer), close
    mount:SOURCE:FSTYPE[:OPTIONS]         mount on the role's own folder, umount
    socket:FAMILY:TYPE:PROTOCOL[:ALGTYPE:ALGNAME]
                                          socket (AF_ALG: and bind), close
    netdev-add:KIND                       RTM_NEWLINK of a link of its own, RTM_DELLINK
    exec:CMD                              /bin/sh -c CMD; a non-zero exit is EEXIT

For example `open:/dev/mydrv:read=64`, `ioctl:/dev/x:0x5401`,
`mount:/dev/loop0:minix`, `mount:none:tmpfs:size=1m`,
`socket:alg:seqpacket:0:hash:sha256`, `socket:inet:dgram:0`,
`netdev-add:dummy`, `exec:cat /proc/foo`.  Numbers are decimal, 0x hex, 0o
octal or 0b binary; a socket family or type is a name (`FAMILIES`, `TYPES`)
or a number.  A PATH may hold colons (the keywords are taken from the end);
OPTIONS and CMD are the rest of the line, colons and all.

The racer records an op's calls under the op's kind (`Op.call_op`: `open`,
`ioctl`, `mount`, `socket`, `netdev-add`, `exec`); `mount` also records
`umount`, and `netdev-add` records `netdev-del` (`Op.ops`).  Bad text is one
`HarnessError` line that names the kind's syntax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ..errors import HarnessError
from .racer import Role, RoleSpec

# Address families by name (linux/socket.h); any other number is accepted too.
FAMILIES: dict[str, int] = {
    "unix": 1,
    "local": 1,
    "inet": 2,
    "ax25": 3,
    "ipx": 4,
    "appletalk": 5,
    "x25": 9,
    "inet6": 10,
    "rose": 11,
    "decnet": 12,
    "key": 15,
    "netlink": 16,
    "packet": 17,
    "rds": 21,
    "pppox": 24,
    "llc": 26,
    "ib": 27,
    "mpls": 28,
    "can": 29,
    "tipc": 30,
    "bluetooth": 31,
    "rxrpc": 33,
    "isdn": 34,
    "phonet": 35,
    "ieee802154": 36,
    "caif": 37,
    "alg": 38,
    "nfc": 39,
    "vsock": 40,
    "kcm": 41,
    "qipcrtr": 42,
    "smc": 43,
    "xdp": 44,
    "mctp": 45,
}
AF_ALG = FAMILIES["alg"]
TYPES: dict[str, int] = {"stream": 1, "dgram": 2, "raw": 3, "rdm": 4, "seqpacket": 5, "packet": 10}
MODES = ("r", "w", "rw")
READ_MAX = 65536  # racer.c IO_BUF_SIZE
# Link kinds that need a peer (IFLA_INFO_DATA / *_INFO_PEER, attribute 1 for both).
PEER_KINDS = ("veth", "vxcan")
_KIND_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _name_of(table: dict[str, int], number: int) -> str:
    return next((name for name, n in table.items() if n == number), str(number))


@dataclass(frozen=True)
class Op:
    """One generic operation: a row of one kind (a subclass)."""

    kind: ClassVar[str]  # before the first colon; the racer's --op
    syntax: ClassVar[str]
    summary: ClassVar[str]
    undo: ClassVar[str | None] = None  # the op that undoes the call, recorded apart

    @property
    def call_op(self) -> str:
        """The name its calls get in the racer's JSON and in reports: the kind."""
        return self.kind

    @property
    def ops(self) -> tuple[str, ...]:
        """Every operation the racer records for it, the call first."""
        return (self.call_op,) if self.undo is None else (self.call_op, self.undo)

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "Op":
        """The row from the text's fields after the kind (`text` for errors)."""
        raise NotImplementedError

    def racer_args(self) -> tuple[str, ...]:
        """The arguments after the racer's `--` (numbers in decimal)."""
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The text form again, normalised (`parse(op.text) == op`)."""
        raise NotImplementedError

    def role_spec(self, name: str, **common: Any) -> RoleSpec:
        """The racer's caller role for this op.  `name` is the module the run
        is about (the JSON's "name"); `common` are RoleSpec's other options
        (duration_ms, count, barrier, parties, seed, progress; dir for mount)."""
        return RoleSpec(Role.CALLER, name=name, op=self.kind, op_args=self.racer_args(), **common)

    def __str__(self) -> str:
        return self.text


def _bad(cls: type[Op], text: str, why: str) -> HarnessError:
    return HarnessError(f"op {text!r}: {why}; {cls.kind} takes {cls.syntax}")


def _number(cls: type[Op], text: str, field: str, value: str, top: int) -> int:
    try:
        n = int(value, 0)
    except ValueError:
        raise _bad(cls, text, f"{field} {value!r} is not a number") from None
    if not 0 <= n <= top:
        raise _bad(cls, text, f"{field} {value} is not within 0..{top}")
    return n


def _keywords(cls: type[Op], text: str, fields: list[str], known: Sequence[str]) -> dict[str, str]:
    """Trailing KEY=VALUE fields of the known keys, taken off `fields`."""
    found: dict[str, str] = {}
    while fields and re.fullmatch(r"[a-z]+=.*", fields[-1]) and fields[-1].split("=", 1)[0] in known:
        key, value = fields.pop().split("=", 1)
        if key in found:
            raise _bad(cls, text, f"{key}= given twice")
        found[key] = value
    return found


def _path(cls: type[Op], text: str, fields: list[str]) -> str:
    path = ":".join(fields)
    if not path:
        raise _bad(cls, text, "missing PATH")
    return path


def _mode(cls: type[Op], text: str, mode: str) -> str:
    if mode not in MODES:
        raise _bad(cls, text, f"mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


@dataclass(frozen=True)
class OpenOp(Op):
    kind: ClassVar[str] = "open"
    syntax: ClassVar[str] = "open:PATH[:read=N][:mode=r|w|rw]"
    summary: ClassVar[str] = "open PATH (O_NONBLOCK), read N bytes, close"

    path: str
    read: int = 0  # bytes to read after the open; 0 reads nothing
    mode: str = "r"

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "OpenOp":
        kw = _keywords(cls, text, fields, ("read", "mode"))
        read = _number(cls, text, "read", kw["read"], READ_MAX) if "read" in kw else 0
        return cls(_path(cls, text, fields), read, _mode(cls, text, kw.get("mode", "r")))

    def racer_args(self) -> tuple[str, ...]:
        return (self.path, str(self.read), self.mode)

    @property
    def text(self) -> str:
        return (
            f"open:{self.path}"
            + (f":read={self.read}" if self.read else "")
            + (f":mode={self.mode}" if self.mode != "r" else "")
        )


@dataclass(frozen=True)
class IoctlOp(Op):
    kind: ClassVar[str] = "ioctl"
    syntax: ClassVar[str] = "ioctl:PATH:REQUEST[:mode=r|w|rw]"
    summary: ClassVar[str] = "open PATH, ioctl(REQUEST, a zeroed buffer), close"

    path: str
    request: int
    mode: str = "r"

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "IoctlOp":
        kw = _keywords(cls, text, fields, ("mode",))
        if len(fields) < 2 or not fields[-1]:
            raise _bad(cls, text, "missing REQUEST" if fields and fields[0] else "missing PATH and REQUEST")
        request = _number(cls, text, "REQUEST", fields.pop(), 0xFFFFFFFF)
        return cls(_path(cls, text, fields), request, _mode(cls, text, kw.get("mode", "r")))

    def racer_args(self) -> tuple[str, ...]:
        return (self.path, str(self.request), self.mode)

    @property
    def text(self) -> str:
        return f"ioctl:{self.path}:{self.request:#x}" + (f":mode={self.mode}" if self.mode != "r" else "")


@dataclass(frozen=True)
class MountOp(Op):
    kind: ClassVar[str] = "mount"
    syntax: ClassVar[str] = "mount:SOURCE:FSTYPE[:OPTIONS] (SOURCE a device such as /dev/loop0, or none)"
    summary: ClassVar[str] = "mount SOURCE as FSTYPE on the role's own folder, then umount"
    undo: ClassVar[str | None] = "umount"

    source: str
    fstype: str
    options: str | None = None  # mount(2)'s data, as `mount -o` would pass it

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "MountOp":
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise _bad(cls, text, "missing SOURCE or FSTYPE")
        if re.search(r"\s", fields[1]):
            raise _bad(cls, text, f"FSTYPE {fields[1]!r} has a space")
        options = ":".join(fields[2:]) if len(fields) > 2 else None
        return cls(fields[0], fields[1], options or None)

    def racer_args(self) -> tuple[str, ...]:
        return (self.source, self.fstype) + ((self.options,) if self.options else ())

    @property
    def text(self) -> str:
        return f"mount:{self.source}:{self.fstype}" + (f":{self.options}" if self.options else "")


@dataclass(frozen=True)
class SocketOp(Op):
    kind: ClassVar[str] = "socket"
    syntax: ClassVar[str] = "socket:FAMILY:TYPE:PROTOCOL[:ALGTYPE:ALGNAME] (FAMILY, TYPE: a name or a number)"
    summary: ClassVar[str] = "socket(FAMILY, TYPE, PROTOCOL), for AF_ALG bind to ALGTYPE:ALGNAME, close"

    family: int
    type: int
    protocol: int = 0
    bind: str | None = None  # AF_ALG only: "hash:sha256", "skcipher:cbc(aes)"

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "SocketOp":
        if len(fields) < 3 or not all(fields[:3]):
            raise _bad(cls, text, "missing FAMILY, TYPE or PROTOCOL")
        if len(fields) not in (3, 5):
            raise _bad(cls, text, "a bind is ALGTYPE:ALGNAME, two fields")
        family = cls._named(text, "family", fields[0], FAMILIES)
        stype = cls._named(text, "type", fields[1], TYPES)
        protocol = _number(cls, text, "PROTOCOL", fields[2], 0x7FFFFFFF)
        bind = None
        if len(fields) == 5:
            alg_type, alg_name = fields[3:]
            if family != AF_ALG:
                raise _bad(cls, text, "only an alg socket binds (ALGTYPE:ALGNAME)")
            if not (0 < len(alg_type) <= 13 and 0 < len(alg_name) <= 63):
                raise _bad(cls, text, "ALGTYPE is 1 to 13 bytes and ALGNAME 1 to 63")
            bind = f"{alg_type}:{alg_name}"
        return cls(family, stype, protocol, bind)

    @classmethod
    def _named(cls, text: str, what: str, value: str, table: dict[str, int]) -> int:
        if value.lower() in table:
            return table[value.lower()]
        try:
            return _number(cls, text, what, value, 0xFFFF)
        except HarnessError:
            raise _bad(cls, text, f"unknown socket {what} {value!r} (one of {', '.join(table)}, or a number)") from None

    def racer_args(self) -> tuple[str, ...]:
        return (str(self.family), str(self.type), str(self.protocol)) + ((self.bind,) if self.bind else ())

    @property
    def text(self) -> str:
        return f"socket:{_name_of(FAMILIES, self.family)}:{_name_of(TYPES, self.type)}:{self.protocol}" + (
            f":{self.bind}" if self.bind else ""
        )


@dataclass(frozen=True)
class NetdevOp(Op):
    kind: ClassVar[str] = "netdev-add"
    syntax: ClassVar[str] = "netdev-add:KIND (an rtnetlink link kind: dummy, veth, ifb, bond, vcan, ...)"
    summary: ClassVar[str] = (
        "RTM_NEWLINK of a KIND link named racerPID (veth, vxcan: with a peer racerpPID), then RTM_DELLINK of it"
    )
    undo: ClassVar[str | None] = "netdev-del"

    link_kind: str  # IFLA_INFO_KIND: the bonding module's is "bond"

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "NetdevOp":
        kind = ":".join(fields)
        if not kind:
            raise _bad(cls, text, "missing KIND")
        if not _KIND_RE.match(kind):
            raise _bad(cls, text, f"KIND {kind!r} is not a link kind (letters, digits, _ . -, 64 at most)")
        return cls(kind)

    @property
    def peer(self) -> bool:
        """Whether the link is made with a peer (IFLA_INFO_DATA/VETH_INFO_PEER)."""
        return self.link_kind in PEER_KINDS

    def racer_args(self) -> tuple[str, ...]:
        return (self.link_kind, "peer") if self.peer else (self.link_kind,)

    @property
    def text(self) -> str:
        return f"netdev-add:{self.link_kind}"


@dataclass(frozen=True)
class ExecOp(Op):
    kind: ClassVar[str] = "exec"
    syntax: ClassVar[str] = "exec:CMD (a shell command line)"
    summary: ClassVar[str] = (
        "fork and exec /bin/sh -c CMD, output to /dev/null; a non-zero exit is EEXIT, death by a signal EKILLED"
    )

    cmd: str

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "ExecOp":
        cmd = ":".join(fields)
        if not cmd.strip():
            raise _bad(cls, text, "missing CMD")
        return cls(cmd)

    def racer_args(self) -> tuple[str, ...]:
        return (self.cmd,)

    @property
    def text(self) -> str:
        return f"exec:{self.cmd}"


OP_KINDS: tuple[type[Op], ...] = (OpenOp, IoctlOp, MountOp, SocketOp, NetdevOp, ExecOp)
KINDS: dict[str, type[Op]] = {k.kind: k for k in OP_KINDS}
# What a generic caller's calls are recorded as (each kind's call op).
CALL_OPS: tuple[str, ...] = tuple(k.kind for k in OP_KINDS)


def parse(text: str) -> Op:
    """One operation from its text form (module docstring); a HarnessError of
    one line on bad input."""
    kind, sep, rest = text.partition(":")
    cls = KINDS.get(kind.strip())
    if cls is None:
        raise HarnessError(f"op {text!r}: unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    if not sep:
        raise _bad(cls, text, "missing arguments")
    return cls.from_fields(rest.split(":"), text)


def syntax_help() -> str:
    """One line per kind, for a command line's --help."""
    return "\n".join(f"{k.syntax}: {k.summary}" for k in OP_KINDS)
