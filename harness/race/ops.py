"""Generic caller operations: a caller of any module, not only of the
harness's own template modules, run by the racer's `caller` role.

A user names an operation in one line of text; `parse` turns it into one
typed row (an `Op` subclass per kind) and `Op.role_spec` into the racer's
command line (`RoleSpec` with `Role.CALLER`):

    open:PATH[:read=N][:mode=r|w|rw][:hold[=MS]]
                                          open (O_NONBLOCK), read N bytes, close
    ioctl:PATH:REQUEST[:mode=r|w|rw][:hold[=MS]]
                                          open, ioctl(REQUEST, zeroed buffer), close
    mount:SOURCE:FSTYPE[:OPTIONS][:hold[=MS]]
                                          mount on the role's own folder, umount
    socket:FAMILY:TYPE:PROTOCOL[:ALGTYPE:ALGNAME][:hold[=MS]]
                                          socket (AF_ALG: and bind), close
    netdev-add:KIND[:data=N/TYPE/VALUE,...][:hold[=MS]]
                                          RTM_NEWLINK of a link of its own (data: the
                                          kind's IFLA_INFO_DATA attributes), RTM_DELLINK
    qdisc-add:KIND[:hold[=MS]]            RTM_NEWQDISC of a root qdisc on the loopback
                                          device of a network namespace of its own,
                                          RTM_DELQDISC
    exec:CMD                              /bin/sh -c CMD; a non-zero exit is EEXIT

For example `open:/dev/mydrv:read=64`, `ioctl:/dev/x:0x5401`,
`mount:/dev/loop0:minix`, `mount:none:tmpfs:size=1m`,
`socket:alg:seqpacket:0:hash:sha256`, `socket:inet:dgram:0`,
`netdev-add:dummy`, `qdisc-add:sfq`, `exec:cat /proc/foo`.  Numbers are decimal, 0x hex, 0o
octal or 0b binary; a socket family or type is a name (`FAMILIES`, `TYPES`)
or a number.  A PATH may hold colons (the keywords are taken from the end);
OPTIONS and CMD are the rest of the line, colons and all.

Held calls.  A caller can keep what its call took across unloads: the file
stays open, the file system mounted, the socket open (AF_ALG: bound), the
link added, until the unloader has completed an unload since the take, or
MS milliseconds at most (`HOLD_MS` by default); then it uses it once
(`Op.use`: open reads N bytes if it reads, ioctl makes its ioctl, mount stats
and reads its root, AF_ALG accepts and, for a hash, writes and reads a
digest) and releases it (close, umount, RTM_DELLINK).  That is where a
module whose `file_operations` (or file system type, or protocol) lack
`.owner` fails: the release runs in freed module text.  Between held calls
the caller rests until the module is unloaded and back (MS at most), so a
module that pins itself properly is still unloaded.  `exec` cannot be held
(only its command knows what it took), but its command can hold: the racer
gives it `$RACER_HOLD`, a command that returns once the unloader has
completed an unload since it started, or after MS milliseconds (`$RACER_HOLD
MS`; 5000 by default), or at the race's end.  So `exec:exec 3</dev/tap7;
$RACER_HOLD 2000; cat <&3 >/dev/null` keeps the node open across the next
unload and reads it after, as a held `open` does.  Such a call is judged
as a held call: it reached the module if the module was live when its first
`$RACER_HOLD` began, its holds are no part of its latency, and the caller
rests after it until the module is unloaded and back (that hold's MS at
most).

Which callers an op gets (`Op.holds`): `:hold` or `:hold=MS` makes it held
only, `:hold=0` quick only; without either the race decides: a quick caller
and a held one by default (`race --target`), the quick one alone with
`--no-hold`.  A held call is recorded as one call of the op (same name,
same counts): its latency leaves the hold out, it reached the module
(`ok_live`) if the module was live over the take, and a use or release that
fails after the unload fails the call with that errno.

The racer records an op's calls under the op's kind (`Op.call_op`: `open`,
`ioctl`, `mount`, `socket`, `netdev-add`, `qdisc-add`, `exec`); `mount` also
records `umount`, `netdev-add` records `netdev-del` and `qdisc-add`
`qdisc-del` (`Op.ops`).  Bad text is one
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
HOLD_MS = 250  # a held call's longest hold, unless hold=MS says (above the default --unload-pause)
HOLD_MAX = 60000
# Link kinds that need a peer (IFLA_INFO_DATA / *_INFO_PEER, attribute 1 for both).
PEER_KINDS = ("veth", "vxcan")
_KIND_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_QDISC_RE = re.compile(r"^[A-Za-z0-9_-]{1,15}$")  # TCA_KIND, IFNAMSIZ with its NUL


def _name_of(table: dict[str, int], number: int) -> str:
    return next((name for name, n in table.items() if n == number), str(number))


@dataclass(frozen=True)
class Op:
    """One generic operation: a row of one kind (a subclass)."""

    kind: ClassVar[str]  # before the first colon; the racer's --op
    syntax: ClassVar[str]
    summary: ClassVar[str]
    undo: ClassVar[str | None] = None  # the op that undoes the call, recorded apart
    use: ClassVar[str | None] = None  # what a held call does after the hold; None: it cannot be held

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

    @property
    def own_hold(self) -> int | None:
        """Its `hold=MS` (0: never held); None: the race decides."""
        hold: int | None = getattr(self, "hold", None)  # a field of the kinds that can be held
        return hold

    def holds(self, hold: bool) -> tuple[int, ...]:
        """The hold in ms (0: a quick caller) of each caller it gets, when the
        race holds by default (`hold`) or not (module docstring)."""
        if self.own_hold is not None:
            return (self.own_hold,)
        return (0, HOLD_MS) if hold and self.use is not None else (0,)

    def role_spec(self, name: str, hold_ms: int = 0, **common: Any) -> RoleSpec:
        """The racer's caller role for this op, held for `hold_ms` (0: quick).
        `name` is the module the run is about (the JSON's "name"); `common` are
        RoleSpec's other options (duration_ms, count, barrier, parties, seed,
        progress; dir for mount)."""
        hold_us = hold_ms * 1000 if hold_ms else None
        return RoleSpec(Role.CALLER, name=name, op=self.kind, op_args=self.racer_args(), hold_us=hold_us, **common)

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


# Keywords that may stand alone, and the value they then have.
BARE_KEYWORDS = {"hold": str(HOLD_MS)}


def _keywords(cls: type[Op], text: str, fields: list[str], known: Sequence[str]) -> dict[str, str]:
    """Trailing KEY=VALUE fields of the known keys (or a bare KEY of
    BARE_KEYWORDS), taken off `fields`."""
    found: dict[str, str] = {}
    while fields:
        key, eq, value = fields[-1].partition("=")
        if key not in known or not (eq or key in BARE_KEYWORDS):
            break
        fields.pop()
        if key in found:
            raise _bad(cls, text, f"{key}= given twice")
        found[key] = value if eq else BARE_KEYWORDS[key]
    return found


def _hold(cls: type[Op], text: str, kw: dict[str, str]) -> int | None:
    return _number(cls, text, "hold", kw["hold"], HOLD_MAX) if "hold" in kw else None


def _hold_text(hold: int | None) -> str:
    return "" if hold is None else f":hold={hold}"


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
    syntax: ClassVar[str] = "open:PATH[:read=N][:mode=r|w|rw][:hold[=MS]]"
    summary: ClassVar[str] = "open PATH (O_NONBLOCK), read N bytes, close"
    use: ClassVar[str | None] = "read N bytes (if it reads)"

    path: str
    read: int = 0  # bytes to read after the open; 0 reads nothing
    mode: str = "r"
    hold: int | None = None  # ms; 0: never held; None: the race decides

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "OpenOp":
        kw = _keywords(cls, text, fields, ("read", "mode", "hold"))
        read = _number(cls, text, "read", kw["read"], READ_MAX) if "read" in kw else 0
        return cls(_path(cls, text, fields), read, _mode(cls, text, kw.get("mode", "r")), _hold(cls, text, kw))

    def racer_args(self) -> tuple[str, ...]:
        return (self.path, str(self.read), self.mode)

    @property
    def text(self) -> str:
        return (
            f"open:{self.path}"
            + (f":read={self.read}" if self.read else "")
            + (f":mode={self.mode}" if self.mode != "r" else "")
            + _hold_text(self.hold)
        )


@dataclass(frozen=True)
class IoctlOp(Op):
    kind: ClassVar[str] = "ioctl"
    syntax: ClassVar[str] = "ioctl:PATH:REQUEST[:mode=r|w|rw][:hold[=MS]]"
    summary: ClassVar[str] = "open PATH, ioctl(REQUEST, a zeroed buffer), close"
    use: ClassVar[str | None] = "the ioctl"

    path: str
    request: int
    mode: str = "r"
    hold: int | None = None

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "IoctlOp":
        kw = _keywords(cls, text, fields, ("mode", "hold"))
        if len(fields) < 2 or not fields[-1]:
            raise _bad(cls, text, "missing REQUEST" if fields and fields[0] else "missing PATH and REQUEST")
        request = _number(cls, text, "REQUEST", fields.pop(), 0xFFFFFFFF)
        return cls(_path(cls, text, fields), request, _mode(cls, text, kw.get("mode", "r")), _hold(cls, text, kw))

    def racer_args(self) -> tuple[str, ...]:
        return (self.path, str(self.request), self.mode)

    @property
    def text(self) -> str:
        return (
            f"ioctl:{self.path}:{self.request:#x}"
            + (f":mode={self.mode}" if self.mode != "r" else "")
            + _hold_text(self.hold)
        )


@dataclass(frozen=True)
class MountOp(Op):
    kind: ClassVar[str] = "mount"
    syntax: ClassVar[str] = "mount:SOURCE:FSTYPE[:OPTIONS][:hold[=MS]] (SOURCE a device such as /dev/loop0, or none)"
    summary: ClassVar[str] = "mount SOURCE as FSTYPE on the role's own folder, then umount"
    undo: ClassVar[str | None] = "umount"
    use: ClassVar[str | None] = "stat and read the mount's root"

    source: str
    fstype: str
    options: str | None = None  # mount(2)'s data, as `mount -o` would pass it
    hold: int | None = None

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "MountOp":
        hold = _hold(cls, text, _keywords(cls, text, fields, ("hold",)))
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise _bad(cls, text, "missing SOURCE or FSTYPE")
        if re.search(r"\s", fields[1]):
            raise _bad(cls, text, f"FSTYPE {fields[1]!r} has a space")
        options = ":".join(fields[2:]) if len(fields) > 2 else None
        return cls(fields[0], fields[1], options or None, hold)

    def racer_args(self) -> tuple[str, ...]:
        return (self.source, self.fstype) + ((self.options,) if self.options else ())

    @property
    def text(self) -> str:
        return (
            f"mount:{self.source}:{self.fstype}" + (f":{self.options}" if self.options else "") + _hold_text(self.hold)
        )


@dataclass(frozen=True)
class SocketOp(Op):
    kind: ClassVar[str] = "socket"
    syntax: ClassVar[str] = (
        "socket:FAMILY:TYPE:PROTOCOL[:ALGTYPE:ALGNAME][:hold[=MS]] (FAMILY, TYPE: a name or a number)"
    )
    summary: ClassVar[str] = "socket(FAMILY, TYPE, PROTOCOL), for AF_ALG bind to ALGTYPE:ALGNAME, close"
    use: ClassVar[str | None] = "AF_ALG: accept, and for a hash write and read a digest; others: nothing"

    family: int
    type: int
    protocol: int = 0
    bind: str | None = None  # AF_ALG only: "hash:sha256", "skcipher:cbc(aes)"
    hold: int | None = None

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "SocketOp":
        hold = _hold(cls, text, _keywords(cls, text, fields, ("hold",)))
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
        return cls(family, stype, protocol, bind, hold)

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
        return (
            f"socket:{_name_of(FAMILIES, self.family)}:{_name_of(TYPES, self.type)}:{self.protocol}"
            + (f":{self.bind}" if self.bind else "")
            + _hold_text(self.hold)
        )


# A link kind's own attributes (IFLA_INFO_DATA): N/TYPE/VALUE, TYPE one of these
# (their widths in bytes; flag has no value).
DATA_TYPES = {"u8": 1, "u16": 2, "u32": 4, "flag": 0}
_DATA_RE = re.compile(r"^(?P<attr>\w+)/(?P<type>[a-z0-9]+)(?:/(?P<value>\w+))?$")


@dataclass(frozen=True)
class NetdevOp(Op):
    kind: ClassVar[str] = "netdev-add"
    syntax: ClassVar[str] = (
        "netdev-add:KIND[:data=N/TYPE/VALUE,...][:hold[=MS]] (an rtnetlink link kind: dummy, veth, ifb, bond,"
        " vcan, ...; data: the kind's own IFLA_INFO_DATA attributes, TYPE u8, u16, u32 or flag)"
    )
    summary: ClassVar[str] = (
        "RTM_NEWLINK of a KIND link named racerPID (veth, vxcan: with a peer racerpPID), then RTM_DELLINK of it"
    )
    undo: ClassVar[str | None] = "netdev-del"
    use: ClassVar[str | None] = "nothing (the link is deleted)"

    link_kind: str  # IFLA_INFO_KIND: the bonding module's is "bond"
    hold: int | None = None
    # IFLA_INFO_DATA attributes (number, type, value), for a kind whose newlink
    # needs some: gtp's IFLA_GTP_CREATE_SOCKETS is 5/u8/1.
    data: tuple[tuple[int, str, int], ...] = ()

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "NetdevOp":
        kw = _keywords(cls, text, fields, ("data", "hold"))
        hold = _hold(cls, text, kw)
        kind = ":".join(fields)
        if not kind:
            raise _bad(cls, text, "missing KIND")
        if not _KIND_RE.match(kind):
            raise _bad(cls, text, f"KIND {kind!r} is not a link kind (letters, digits, _ . -, 64 at most)")
        data = tuple(cls._attr(text, item) for item in kw["data"].split(",")) if "data" in kw else ()
        return cls(kind, hold, data)

    @classmethod
    def _attr(cls, text: str, item: str) -> tuple[int, str, int]:
        m = _DATA_RE.match(item)
        if not m or m["type"] not in DATA_TYPES:
            raise _bad(cls, text, f"data {item!r} is not N/TYPE/VALUE")
        width = DATA_TYPES[m["type"]]
        if (m["value"] is None) != (width == 0):
            raise _bad(cls, text, f"data {item!r}: " + ("a flag has no VALUE" if not width else "missing VALUE"))
        attr = _number(cls, text, "data attribute", m["attr"], 0xFFFF)
        if not attr:
            raise _bad(cls, text, "data attribute 0 is no attribute")
        value = _number(cls, text, "data VALUE", m["value"], (1 << (8 * width)) - 1) if width else 0
        return attr, m["type"], value

    @property
    def peer(self) -> bool:
        """Whether the link is made with a peer (IFLA_INFO_DATA/VETH_INFO_PEER)."""
        return self.link_kind in PEER_KINDS

    @property
    def data_text(self) -> str:
        return ",".join(f"{a}/{t}" + (f"/{v}" if DATA_TYPES[t] else "") for a, t, v in self.data)

    def racer_args(self) -> tuple[str, ...]:
        return (self.link_kind, *(("peer",) if self.peer else ()), *((f"data={self.data_text}",) if self.data else ()))

    @property
    def text(self) -> str:
        return f"netdev-add:{self.link_kind}" + (f":data={self.data_text}" if self.data else "") + _hold_text(self.hold)


@dataclass(frozen=True)
class QdiscOp(Op):
    kind: ClassVar[str] = "qdisc-add"
    syntax: ClassVar[str] = (
        "qdisc-add:KIND[:hold[=MS]] (a traffic-control qdisc kind: sfq, fq_codel, prio, ingress, ...)"
    )
    summary: ClassVar[str] = (
        "RTM_NEWQDISC of a root KIND qdisc (ingress, clsact: at ingress) on the loopback device of a network"
        " namespace of the caller's own, then RTM_DELQDISC"
    )
    undo: ClassVar[str | None] = "qdisc-del"
    use: ClassVar[str | None] = "nothing (the qdisc is deleted)"

    qdisc_kind: str  # TCA_KIND: sch_sfq's is "sfq"
    hold: int | None = None

    @classmethod
    def from_fields(cls, fields: list[str], text: str) -> "QdiscOp":
        kw = _keywords(cls, text, fields, ("hold",))
        kind = ":".join(fields)
        if not _QDISC_RE.match(kind):
            raise _bad(cls, text, f"KIND {kind!r} is not a qdisc kind (letters, digits, _ -, 15 at most)")
        return cls(kind, _hold(cls, text, kw))

    def racer_args(self) -> tuple[str, ...]:
        return (self.qdisc_kind,)

    @property
    def text(self) -> str:
        return f"qdisc-add:{self.qdisc_kind}" + _hold_text(self.hold)


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


OP_KINDS: tuple[type[Op], ...] = (OpenOp, IoctlOp, MountOp, SocketOp, NetdevOp, QdiscOp, ExecOp)
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
    return "\n".join(
        f"{k.syntax}: {k.summary}" + (f"; held: {k.use}, then the release" if k.use else "; cannot be held")
        for k in OP_KINDS
    )
