"""Generic caller operations (harness/race/ops.py): the text form of every
kind, bad text as one-line errors, the racer command line, and the racer's
`caller` role run on the host with the ops that need no privilege and no
module (open and ioctl of /dev/null, a unix socket, exec of true/false)."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from harness.errors import HarnessError
from harness.guest.programs import build_racer
from harness.race import ops
from harness.race.ops import ExecOp, IoctlOp, MountOp, NetdevOp, OpenOp, QdiscOp, SocketOp, parse
from harness.race.racer import Role, RoleSpec, latency_from_hist, parse_role_output
from harness.race.reach import role_reach

# text -> (the row, the racer's arguments after "--", the op names in its JSON)
EXAMPLES = {
    "open:/dev/mydrv": (OpenOp("/dev/mydrv"), ["/dev/mydrv", "0", "r"], ("open",)),
    "open:/dev/mydrv:read=64": (OpenOp("/dev/mydrv", 64), ["/dev/mydrv", "64", "r"], ("open",)),
    "open:/dev/x:mode=rw:read=0x10": (OpenOp("/dev/x", 16, "rw"), ["/dev/x", "16", "rw"], ("open",)),
    "open:/dev/disk/by-path/pci-0000:00:1f.2": (
        OpenOp("/dev/disk/by-path/pci-0000:00:1f.2"),
        ["/dev/disk/by-path/pci-0000:00:1f.2", "0", "r"],
        ("open",),
    ),
    "ioctl:/dev/x:0x5401": (IoctlOp("/dev/x", 0x5401), ["/dev/x", "21505", "r"], ("ioctl",)),
    "ioctl:/dev/uinput:2147767597:mode=w": (
        IoctlOp("/dev/uinput", 0x8004552D, "w"),
        ["/dev/uinput", "2147767597", "w"],
        ("ioctl",),
    ),
    "mount:/dev/loop0:minix": (MountOp("/dev/loop0", "minix"), ["/dev/loop0", "minix"], ("mount", "umount")),
    "mount:none:tmpfs:size=1m": (
        MountOp("none", "tmpfs", "size=1m"),
        ["none", "tmpfs", "size=1m"],
        ("mount", "umount"),
    ),
    "mount:none:9p:trans=virtio,a=b:c": (
        MountOp("none", "9p", "trans=virtio,a=b:c"),
        ["none", "9p", "trans=virtio,a=b:c"],
        ("mount", "umount"),
    ),
    "socket:alg:seqpacket:0:hash:sha256": (
        SocketOp(38, 5, 0, "hash:sha256"),
        ["38", "5", "0", "hash:sha256"],
        ("socket",),
    ),
    "socket:inet:dgram:0": (SocketOp(2, 2, 0), ["2", "2", "0"], ("socket",)),
    "socket:netlink:raw:16": (SocketOp(16, 3, 16), ["16", "3", "16"], ("socket",)),
    "socket:40:1:0": (SocketOp(40, 1, 0), ["40", "1", "0"], ("socket",)),
    "socket:Bluetooth:SEQPACKET:0": (SocketOp(31, 5, 0), ["31", "5", "0"], ("socket",)),
    "netdev-add:dummy": (NetdevOp("dummy"), ["dummy"], ("netdev-add", "netdev-del")),
    "netdev-add:veth": (NetdevOp("veth"), ["veth", "peer"], ("netdev-add", "netdev-del")),
    "netdev-add:bond": (NetdevOp("bond"), ["bond"], ("netdev-add", "netdev-del")),
    "netdev-add:gtp:data=5/u8/1": (
        NetdevOp("gtp", data=((5, "u8", 1),)),
        ["gtp", "data=5/u8/1"],
        ("netdev-add", "netdev-del"),
    ),
    "netdev-add:veth:data=0x3/u16/0x10,4/flag:hold=9": (
        NetdevOp("veth", 9, ((3, "u16", 16), (4, "flag", 0))),
        ["veth", "peer", "data=3/u16/16,4/flag"],
        ("netdev-add", "netdev-del"),
    ),
    "qdisc-add:sfq": (QdiscOp("sfq"), ["sfq"], ("qdisc-add", "qdisc-del")),
    "qdisc-add:fq_codel:hold=0": (QdiscOp("fq_codel", 0), ["fq_codel"], ("qdisc-add", "qdisc-del")),
    "exec:cat /proc/foo": (ExecOp("cat /proc/foo"), ["cat /proc/foo"], ("exec",)),
    "exec:echo a:b | grep -q b": (ExecOp("echo a:b | grep -q b"), ["echo a:b | grep -q b"], ("exec",)),
}


@pytest.mark.parametrize("text", EXAMPLES)
def test_every_kind_parses_into_its_row(text):
    row, args, names = EXAMPLES[text]
    op = parse(text)
    assert op == row and op.racer_args() == tuple(args) and op.ops == names
    assert op.call_op == op.kind == names[0]
    assert parse(op.text) == op and str(op) == op.text, "the normalised text parses back"


def test_every_kind_has_an_example_and_a_call_op():
    assert {type(row) for row, _, _ in EXAMPLES.values()} == set(ops.OP_KINDS)
    assert ops.CALL_OPS == ("open", "ioctl", "mount", "socket", "netdev-add", "qdisc-add", "exec")
    assert len(ops.syntax_help().splitlines()) == len(ops.OP_KINDS)


def test_normalised_text_uses_names_and_hex():
    assert parse("socket:38:5:0:hash:md4").text == "socket:alg:seqpacket:0:hash:md4"
    assert parse("socket:local:stream:0").text == "socket:unix:stream:0"
    assert parse("socket:200:7:0").text == "socket:200:7:0"
    assert parse("ioctl:/dev/x:21505").text == "ioctl:/dev/x:0x5401"
    assert parse("open:/dev/x:read=0:mode=r").text == "open:/dev/x"


@pytest.mark.parametrize(
    "text,message",
    [
        ("bogus:x", "unknown kind 'bogus'; one of: open, ioctl, mount, socket, netdev-add, qdisc-add, exec"),
        ("", "unknown kind ''"),
        ("open", "missing arguments"),
        ("open:", "missing PATH"),
        ("open:read=5", "missing PATH"),
        ("open:/dev/x:read=many", "read 'many' is not a number"),
        ("open:/dev/x:read=-1", "read -1 is not within 0..65536"),
        ("open:/dev/x:read=65537", "not within 0..65536"),
        ("open:/dev/x:mode=x", "mode 'x' is not one of r, w, rw"),
        ("open:/dev/x:read=1:read=2", "read= given twice"),
        ("ioctl:/dev/x", "missing REQUEST"),
        ("ioctl:", "missing PATH and REQUEST"),
        ("ioctl::0x1", "missing PATH"),
        ("ioctl:/dev/x:TCGETS", "REQUEST 'TCGETS' is not a number"),
        ("ioctl:/dev/x:0x100000000", "not within 0..4294967295"),
        ("mount:none", "missing SOURCE or FSTYPE"),
        ("mount::tmpfs", "missing SOURCE or FSTYPE"),
        ("mount:none:tmp fs", "has a space"),
        ("socket:inet:stream", "missing FAMILY, TYPE or PROTOCOL"),
        ("socket:ipv4:stream:0", "unknown socket family 'ipv4'"),
        ("socket:inet:stream2:0", "unknown socket type 'stream2'"),
        ("socket:inet:stream:tcp", "PROTOCOL 'tcp' is not a number"),
        ("socket:inet:stream:0:hash:sha256", "only an alg socket binds"),
        ("socket:alg:seqpacket:0:hash", "a bind is ALGTYPE:ALGNAME, two fields"),
        ("socket:alg:seqpacket:0:hash:", "ALGTYPE is 1 to 13 bytes and ALGNAME 1 to 63"),
        ("socket:alg:seqpacket:0:averyveryverylongtype:x", "ALGTYPE is 1 to 13 bytes"),
        ("netdev-add:", "missing KIND"),
        ("qdisc-add:", "is not a qdisc kind"),
        ("qdisc-add:a_qdisc_kind_too_long", "is not a qdisc kind"),
        ("netdev-add:du mmy", "is not a link kind"),
        ("netdev-add:gtp:data=5/u8", "missing VALUE"),
        ("netdev-add:gtp:data=5/flag/1", "a flag has no VALUE"),
        ("netdev-add:gtp:data=5/u64/1", "is not N/TYPE/VALUE"),
        ("netdev-add:gtp:data=0/u8/1", "attribute 0 is no attribute"),
        ("netdev-add:gtp:data=5/u8/256", "not within 0..255"),
        ("netdev-add:gtp:data=65536/u8/1", "not within 0..65535"),
        ("netdev-add:gtp:data=5/u8/1,", "is not N/TYPE/VALUE"),
        ("exec:", "missing CMD"),
        ("exec:   ", "missing CMD"),
    ],
)
def test_bad_text_is_one_line_naming_the_syntax(text, message):
    with pytest.raises(HarnessError) as exc:
        parse(text)
    msg = str(exc.value)
    assert message in msg and "\n" not in msg
    kind = text.partition(":")[0]
    if kind in ops.KINDS:
        assert f"{kind} takes {ops.KINDS[kind].syntax}" in msg


def test_role_spec_is_the_racers_caller_command_line():
    spec = parse("socket:alg:seqpacket:0:hash:sha256").role_spec(
        name="algif_hash", duration_ms=3000, barrier="/dev/shm/b", parties=2, seed=7, progress=True
    )
    assert spec.role is Role.CALLER and spec.caller_op == "socket"
    assert spec.argv("/bin/racer") == [
        "/bin/racer",
        "caller",
        "--name",
        "algif_hash",
        "--duration-ms",
        "3000",
        "--barrier",
        "/dev/shm/b",
        "--parties",
        "2",
        "--seed",
        "7",
        "--progress",
        "--op",
        "socket",
        "--",
        "38",
        "5",
        "0",
        "hash:sha256",
    ]
    cmd = parse("exec:cat /proc/foo; true").role_spec(name="m", count=3).command("/bin/racer")
    assert cmd == "/bin/racer caller --name m --count 3 --op exec -- 'cat /proc/foo; true'"
    mnt = parse("mount:/dev/loop0:minix").role_spec(name="minix", dir="/mnt/x")
    assert mnt.argv("r")[2:] == ["--name", "minix", "--dir", "/mnt/x", "--op", "mount", "--", "/dev/loop0", "minix"]
    assert "--" not in RoleSpec("looker", "m", ctl="/dev/c").argv("r"), "no op, no separator"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(role="caller", name="m"), "racer caller needs --op"),
        (dict(role="looker", name="m", ctl="/dev/c", op="open"), "takes no --op"),
        (dict(role="looker", name="m", ctl="/dev/c", op_args=("x",)), "takes no --op"),
    ],
)
def test_role_spec_refuses_ops_where_the_racer_would(kwargs, message):
    with pytest.raises(HarnessError, match=message):
        RoleSpec(**kwargs)


def test_caller_role_names_its_calls_by_its_op():
    assert Role.CALLER.caller and not Role.CALLER.takes_bus and Role.CALLER.needs == ("op",)
    assert Role.CALLER.caller_op is None and Role.CALLER.op_name("netdev-add") == "netdev-add"
    assert RoleSpec("caller", "m", op="exec", op_args=["true"]).op_args == ("true",)
    assert RoleSpec("looker", "m", ctl="/dev/c").caller_op == "lookup"


# ---------------------------------------------------------------- the racer on the host


@pytest.fixture(scope="module")
def racer():
    return str(build_racer())


def _caller(racer, text, *extra):
    argv = parse(text).role_spec(name="host").argv(racer)
    sep = argv.index("--")
    proc = subprocess.run([*argv[:sep], *extra, *argv[sep:]], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    res = parse_role_output(proc.stdout)
    assert res.error is None and res.role is Role.CALLER and res.name == "host"
    return res


@pytest.mark.parametrize(
    "text,op,errors",
    [
        ("open:/dev/null", "open", {}),
        ("open:/dev/zero:read=4096", "open", {}),
        ("open:/nonexistent/racer-op", "open", {"ENOENT": 200}),
        ("open:/dev/full:mode=w", "open", {}),
        ("ioctl:/dev/null:0x5401", "ioctl", {"ENOTTY": 200}),
        ("socket:unix:stream:0", "socket", {}),
        ("socket:unix:dgram:0", "socket", {}),
        ("socket:unix:stream:99", "socket", {"EPROTONOSUPPORT": 200}),
        ("socket:250:stream:0", "socket", {"EAFNOSUPPORT": 200}),
        ("exec:true", "exec", {}),
        ("exec:exit 3", "exec", {"EEXIT": 200}),
        ("exec:kill -9 $$", "exec", {"EKILLED": 200}),
    ],
)
def test_ops_run_on_the_host(racer, text, op, errors):
    res = _caller(racer, text, "--count", "200")
    st = res.ops[op]
    assert res.iterations == 200 and st.total == 200 and st.ok == 200 - sum(errors.values())
    assert st.errors == errors and list(res.ops) == [op]
    assert st.failed_by_unloads_met == (st.failed, 0, 0) and st.failed_during_unload == 0, "no unloader here"
    assert st.has_hist and latency_from_hist(st.hist, st.latency_us["max"]) == st.latency_us
    calls = res.events.calls
    assert calls.op == op and sum(calls.done) == 200 and sum(calls.ok) == st.ok
    assert calls.failures_total == st.failed and len(calls.failures) == st.failed


def test_exec_output_stays_out_of_the_json(racer):
    res = _caller(racer, 'exec:echo \'{"role":"x"}\'; echo noise >&2', "--count", "3")
    assert res.ops["exec"].ok == 3


def test_deadline_applies_to_a_caller(racer):
    res = _caller(racer, "open:/dev/null", "--duration-ms", "300")
    assert 300 <= res.duration_ms < 1000 and res.iterations == res.ops["open"].total > 1000


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "caller needs --op KIND"),
        (["--op", "bogus", "--", "x"], "unknown --op KIND"),
        (["--op", "open"], "wrong number of arguments"),
        (["--op", "open", "--", "/dev/null", "0", "r", "extra"], "wrong number of arguments"),
        (["--op", "open", "--", "/dev/null", "65537"], "READ is 0 to 65536"),
        (["--op", "open", "--", "/dev/null", "1", "rx"], "an open mode is r, w or rw"),
        (["--op", "ioctl", "--", "/dev/null", "-1"], "REQUEST is a 32-bit number"),
        (["--op", "socket", "--", "2", "1", "0", "hash:sha256"], "only AF_ALG binds"),
        (["--op", "socket", "--", "38", "5", "0", "hash"], "only AF_ALG binds"),
        (["--op", "socket", "--", "inet", "1", "0"], "FAMILY is a number"),
        (["--op", "netdev-add", "--", "dummy", "twin"], "only peer and data=SPEC"),
        (["--op", "qdisc-add", "--", "a_qdisc_kind_too_long"], "KIND is 1 to 15 bytes"),
        (["--op", "qdisc-add", "--", "sfq", "extra"], "wrong number of arguments"),
        (["--op", "netdev-add", "--", "gtp", "data=5/u8"], "data is N/TYPE/VALUE"),
        (["--op", "netdev-add", "--", "gtp", "data=5/u64/1"], "TYPE is u8, u16, u32 or flag"),
        (["--op", "netdev-add", "--", "gtp", "data=5/u8/1;"], "data is N/TYPE/VALUE"),
    ],
)
def test_caller_bad_usage_exits_2(racer, args, message):
    proc = subprocess.run([racer, "caller", "--name", "x", *args], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("racer: ") and message in proc.stderr.splitlines()[0]


def test_other_roles_still_refuse_arguments(racer):
    proc = subprocess.run(
        [racer, "looker", "--name", "x", "--ctl", "/dev/null", "--", "extra"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2 and "unexpected argument" in proc.stderr


# ---------------------------------------------------------------- held calls

HELD = {
    "open:/dev/x:read=16:hold": (OpenOp("/dev/x", 16, "r", ops.HOLD_MS), "open:/dev/x:read=16:hold=250"),
    "open:/dev/x:hold=0:read=16": (OpenOp("/dev/x", 16, "r", 0), "open:/dev/x:read=16:hold=0"),
    "ioctl:/dev/x:0x5401:hold=40:mode=w": (IoctlOp("/dev/x", 0x5401, "w", 40), "ioctl:/dev/x:0x5401:mode=w:hold=40"),
    "mount:none:tmpfs:size=1m:hold=100": (MountOp("none", "tmpfs", "size=1m", 100), None),
    "mount:/dev/loop0:minix:hold": (MountOp("/dev/loop0", "minix", None, 250), "mount:/dev/loop0:minix:hold=250"),
    "socket:alg:seqpacket:0:hash:sha256:hold=0x10": (
        SocketOp(38, 5, 0, "hash:sha256", 16),
        "socket:alg:seqpacket:0:hash:sha256:hold=16",
    ),
    "socket:inet:dgram:0:hold": (SocketOp(2, 2, 0, None, 250), "socket:inet:dgram:0:hold=250"),
    "netdev-add:veth:hold=50": (NetdevOp("veth", 50), None),
}


@pytest.mark.parametrize("text", HELD)
def test_hold_is_an_option_of_every_kind_but_exec(text):
    row, normal = HELD[text]
    op = parse(text)
    assert op == row and op.text == (normal or text) and parse(op.text) == op
    assert op.racer_args() == dataclasses.replace(op, hold=None).racer_args(), "the racer is told by --hold-us"
    assert op.holds(True) == op.holds(False) == (op.own_hold,), "its own hold= decides"


def test_without_its_own_hold_an_op_gets_a_quick_and_a_held_caller_unless_holding_is_off():
    for text in ("open:/dev/x", "ioctl:/dev/x:1", "mount:none:tmpfs", "socket:unix:stream:0", "netdev-add:dummy"):
        op = parse(text)
        assert op.own_hold is None and op.use
        assert op.holds(True) == (0, ops.HOLD_MS) and op.holds(False) == (0,)
    exec_op = parse("exec:sleep 1:hold")  # CMD is the rest of the line: exec cannot be held
    assert exec_op == ExecOp("sleep 1:hold") and exec_op.use is None
    assert exec_op.holds(True) == exec_op.holds(False) == (0,)
    assert "cannot be held" in ops.syntax_help().splitlines()[-1]


@pytest.mark.parametrize(
    "text,message",
    [
        ("open:/dev/x:hold=soon", "hold 'soon' is not a number"),
        ("open:/dev/x:hold=60001", "hold 60001 is not within 0..60000"),
        ("open:/dev/x:hold:hold=3", "hold= given twice"),
        ("netdev-add:dummy:hold=-1", "not within 0..60000"),
        ("socket:inet:dgram:0:x:hold", "a bind is ALGTYPE:ALGNAME, two fields"),
    ],
)
def test_bad_hold_is_one_line_naming_the_syntax(text, message):
    with pytest.raises(HarnessError) as exc:
        parse(text)
    assert message in str(exc.value) and "[:hold[=MS]]" in str(exc.value)


def test_a_held_role_tells_the_racer_its_hold_in_microseconds():
    op = parse("open:/dev/x:read=8")
    assert op.role_spec(name="m", hold_ms=250).argv("r")[2:] == [
        "--name",
        "m",
        "--hold-us",
        "250000",
        "--op",
        "open",
        "--",
        "/dev/x",
        "8",
        "r",
    ]
    assert "--hold-us" not in op.role_spec(name="m").argv("r"), "a quick caller"


@pytest.mark.parametrize(
    "text,op",
    [("open:/dev/zero:read=64", "open"), ("ioctl:/dev/null:0x5401", "ioctl"), ("socket:unix:stream:0", "socket")],
)
def test_a_held_call_keeps_what_it_took_for_its_hold_with_no_unloader(racer, text, op):
    # No unloader: every take is kept the whole hold, and the caller rests as long again.
    res = _caller(racer, text, "--hold-us", "20000", "--count", "3")
    st = res.ops[op]
    assert res.iterations == st.total == 3 and list(res.ops) == [op]
    assert st.ok == st.ok_live == (0 if op == "ioctl" else 3), st.errors
    assert st.errors == ({"ENOTTY": 3} if op == "ioctl" else {})
    assert res.duration_ms >= 5 * 20, "three holds and two rests"
    assert st.latency_us["max"] < 20000, "the hold is no part of a call's latency"
    assert res.hold_us == 20000 and _caller(racer, text, "--count", "1").hold_us == 0
    (reach,) = role_reach([res])
    assert reach.label == f"caller1 {op} (held)" and reach.calls == 3


def test_exec_cannot_be_held(racer):
    proc = subprocess.run(
        [racer, "caller", "--name", "x", "--hold-us", "5", "--op", "exec", "--", "true"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2 and "this --op cannot be held" in proc.stderr.splitlines()[0]
