"""discover without a guest: aliases and registry lines to ops, /proc/crypto,
and the per-module flow against a scripted shell."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from harness.errors import HarnessError
from harness.guest.ssh import CommandResult
from harness.race import discover as d
from harness.race.ops import parse
from harness.race.targets import Kind

CRYPTO = """name         : twofish
driver       : twofish-generic
module       : twofish_generic
priority     : 100
type         : cipher

name         : sha256
driver       : sha256-generic
module       : kernel
type         : shash

name         : __xts(twofish)
driver       : __xts-twofish-avx
module       : twofish_avx_x86_64
internal     : yes
type         : skcipher

name         : rsa
driver       : rsa-generic
module       : rsa_generic
type         : akcipher
"""


def ops_of(cands):
    return [c.ops for c in cands]


def test_aliases_give_ops_of_their_kind():
    facts = d.Facts(aliases=("rtnl-link-dummy", "net-pf-10-proto-132", "can-proto-1", "devname:uhid", "crypto-cbc"))
    cands, notes = d.candidates("m", facts, {}, [])
    assert ops_of(cands) == [
        ("netdev-add:dummy",),
        tuple(f"socket:10:{t}:132" for t in d.SOCKET_TYPES),
        ("socket:can:raw:1", "socket:can:dgram:1"),
        ("open:/dev/uhid",),
        ("socket:alg:seqpacket:0:skcipher:cbc(aes)",),
    ]
    assert notes == []
    for c in cands:  # every op derived is one the racer takes
        for text in c.ops:
            parse(text)


def test_a_link_kind_that_needs_attributes_gets_them():
    cands, _ = d.candidates("m", d.Facts(aliases=("rtnl-link-gtp", "rtnl-link-vxlan")), {}, [])
    assert ops_of(cands) == [("netdev-add:gtp:data=5/u8/1:hold=0",), ("netdev-add:vxlan:data=1/u32/42",)]
    gtp = parse(cands[0].ops[0])
    assert gtp.racer_args() == ("gtp", "data=5/u8/1") and gtp.holds(True) == (0,), "one quick caller"


def test_typed_protocol_alias_is_one_op_and_wins_over_the_untyped_rule():
    cands, _ = d.candidates("m", d.Facts(aliases=("net-pf-2-proto-262-type-1",)), {}, [])
    assert ops_of(cands) == [("socket:2:1:262",)]


def test_aliases_without_a_generic_op_are_notes():
    facts = d.Facts(aliases=("net-pf-16-proto-16-family-gtp", "ipt_TRACE", "tcp-bbr", "pci:v00008086d*"))
    cands, notes = d.candidates("m", facts, {}, [])
    assert cands == []
    assert notes == [
        "genetlink family gtp: no generic op",
        "netfilter ipt_TRACE: no generic op",
        "TCP congestion control bbr: no generic op",
    ]


def test_char_major_makes_its_own_node_unless_the_module_names_one():
    cands, _ = d.candidates("m", d.Facts(aliases=("char-major-10-239",)), {}, [])
    assert ops_of(cands) == [("open:/dev/harness-10-239",)]
    assert cands[0].setup == ("mknod /dev/harness-10-239 c 10 239",)
    assert cands[0].cleanup == ("rm -f /dev/harness-10-239",)
    cands, _ = d.candidates("m", d.Facts(aliases=("char-major-10-239", "devname:uhid"), devname=("uhid",)), {}, [])
    assert ops_of(cands) == [("open:/dev/uhid",)]


def test_own_algorithms_come_from_proc_crypto_by_driver_name():
    algs = d.parse_crypto(CRYPTO)
    assert [a.module for a in algs] == ["twofish_generic", "kernel", "twofish_avx_x86_64", "rsa_generic"]
    facts = d.Facts(
        aliases=("crypto-twofish", "crypto-twofish-generic"), crypto_names=frozenset({"twofish", "twofish-generic"})
    )
    cands, notes = d.candidates("twofish_generic", facts, {}, algs)
    assert ops_of(cands) == [("socket:alg:seqpacket:0:skcipher:ecb(twofish-generic)",)]
    assert [c.kind for c in cands] == [Kind.CRYPTO]
    _, notes = d.candidates("rsa_generic", d.Facts(), {}, algs)
    assert notes == ["crypto rsa-generic (akcipher): AF_ALG cannot bind it"]
    cands, _ = d.candidates("twofish_avx_x86_64", d.Facts(), {}, algs)
    assert cands == []  # internal algorithms are not for users


def test_registry_lines_become_ops():
    before = d.parse_sections("@@filesystems\nnodev\tproc\n@@dev\nc /dev/null\n@@proc\nf /proc/meminfo\n")
    after = d.parse_sections(
        "@@filesystems\nnodev\tproc\nnodev\tconfigfs\n\tvfat\n\tminix\n"
        "@@dev\nc /dev/null\nb /dev/ram0\nb /dev/ram1\nb /dev/ram10\nc /dev/uinput\n"
        "@@proc\nf /proc/meminfo\nf /proc/net/pktgen/pgctrl\n"
        "@@protocols\nSCTP\n"
    )
    reg = d.added(before, after)
    assert reg["dev"] == ("b /dev/ram0", "c /dev/uinput")  # one of each numbered kind
    assert reg["protocols"] == ("SCTP",)
    cands, _ = d.candidates("m", d.Facts(), reg, [])
    assert ops_of(cands) == [
        ("mount:/dev/loop0:minix",),
        ("mount:/dev/loop0:vfat",),
        ("mount:none:configfs",),
        ("open:/dev/ram0:read=4096",),
        ("open:/dev/uinput",),
        ("open:/proc/net/pktgen/pgctrl:read=4096",),
    ]
    minix, vfat = cands[0], cands[1]
    assert "no mkfs for minix" in minix.source and minix.setup[-1] == "true /dev/loop0 >/dev/null"
    assert vfat.setup[-1] == "mkdosfs /dev/loop0 >/dev/null" and vfat.kmods == ("loop",)
    assert vfat.cleanup == ("losetup -d /dev/loop0",)


def test_a_watchdog_node_is_never_opened_and_says_why():
    reg = d.added(d.parse_sections("@@dev\n"), d.parse_sections("@@dev\nc /dev/watchdog\nc /dev/watchdog0\n"))
    cands, notes = d.candidates("softdog", d.Facts(), reg, [])
    assert cands == [] and notes == [
        "/dev/watchdog: not opened (an open arms the watchdog, which then reboots the guest)"
    ]


def test_an_op_derived_twice_is_tried_once():
    reg = {"dev": ("c /dev/uhid",)}
    cands, _ = d.candidates("m", d.Facts(aliases=("devname:uhid",)), reg, [])
    assert ops_of(cands) == [("open:/dev/uhid",)]
    assert cands[0].source == "/dev"


def test_the_snapshot_script_prints_every_section():
    script = d.snapshot_script()
    for name in d.SECTIONS:
        assert f"echo @@{name};" in script


@dataclass
class Shell:
    """A guest that answers by pattern: (regex, exit status, stdout), first match wins."""

    answers: list[tuple[str, int, str]]
    sent: list[str] = field(default_factory=list)

    def run(self, command: str, timeout: float | None = 300) -> CommandResult:
        self.sent.append(command)
        for pattern, status, out in self.answers:
            if re.search(pattern, command):
                return CommandResult(command, status, out, "", 0.0)
        return CommandResult(command, 0, "", "", 0.0)


def racer_json(op: str, ok: int, errors: dict[str, int] | None = None) -> str:
    errs = errors or {}
    return json.dumps(
        {"role": "caller", "name": "m", "ops": {op: {"total": ok + sum(errs.values()), "ok": ok, "errors": errs}}}
    )


LOAD = "@@filesystems\nnodev\tproc\n@@@load\n@@@rc 0\n@@filesystems\nnodev\tproc\nnodev\tconfigfs\n"


def test_a_module_that_registers_a_file_system_is_reached_by_mounting_it():
    shell = Shell([(r"^grep -q", 1, ""), (r"@@@load", 0, LOAD), (r"racer caller", 0, racer_json("mount", 1))])
    found = d.discover_one(shell, "configfs", "module", d.Facts(aliases=("fs-configfs",)))
    assert [e.op for e in found.reaching] == ["mount:none:configfs"]
    assert found.why_none is None
    assert found.registered == {"filesystems": ("nodev\tconfigfs",)}
    racer = next(c for c in shell.sent if "racer caller" in c)
    assert "--count 1" in racer and "--op mount" in racer and "--dir /mnt/target0" in racer
    assert shell.sent[-1] == "/sbin/modprobe -r configfs"  # unloaded after
    row = found.target()
    assert row is not None and row.ops == ("mount:none:configfs",) and row.kind is Kind.FILESYSTEM


def test_socket_alternatives_stop_at_the_first_that_reaches():
    shell = Shell(
        [
            (r"^grep -q", 1, ""),
            (r"@@@load", 0, "@@@load\n@@@rc 0\n"),
            (r"-- 10 1 132", 0, racer_json("socket", 0, {"EPROTONOSUPPORT": 1})),
            (r"-- 10 2 132", 0, racer_json("socket", 0, {"ESOCKTNOSUPPORT": 1})),
            (r"-- 10 5 132", 0, racer_json("socket", 1)),
        ]
    )
    found = d.discover_one(shell, "sctp", "module", d.Facts(aliases=("net-pf-10-proto-132",)))
    assert [e.op for e in found.reaching] == ["socket:inet6:seqpacket:132"]
    assert not any("-- 10 3 132" in c for c in shell.sent)


def test_a_candidate_that_never_succeeds_is_kept_unreached_with_its_errno():
    shell = Shell(
        [
            (r"^grep -q", 1, ""),
            (r"@@@load", 0, "@@@load\n@@@rc 0\n"),
            (r"racer caller", 0, racer_json("netdev-add", 0, {"EOPNOTSUPP": 1})),
        ]
    )
    found = d.discover_one(shell, "m", "module", d.Facts(aliases=("rtnl-link-m",)))
    assert found.reaching == () and found.why_none is d.NoOps.UNREACHED
    assert found.entries[0].errno == "EOPNOTSUPP"
    assert found.target() is None


@pytest.mark.parametrize(
    ("state", "answers", "aliases", "why"),
    [
        (None, [], (), d.NoOps.NO_MODULE),
        ("builtin", [], (), d.NoOps.BUILTIN),
        (
            "module",
            [(r"^grep -q", 0, ""), (r"modprobe -r", 1, ""), (r"^grep '", 0, "m 16384 2 - Live 0x0\n")],
            (),
            d.NoOps.IN_USE,
        ),
        (
            "module",
            [(r"^grep -q", 1, ""), (r"@@@load", 0, "@@@load\nmodprobe: ERROR: No such device\n@@@rc 1\n")],
            (),
            d.NoOps.CANNOT_LOAD,
        ),
        (
            "module",
            [(r"^grep -q", 1, ""), (r"@@@load", 0, "@@@load\n@@@rc 0\n")],
            ("pci:v00008086d*",),
            d.NoOps.HARDWARE,
        ),
        ("module", [(r"^grep -q", 1, ""), (r"@@@load", 0, "@@@load\n@@@rc 0\n")], ("tcp-bbr",), d.NoOps.NOTHING),
    ],
)
def test_why_a_module_has_no_ops(state, answers, aliases, why):
    found = d.discover_one(Shell(answers), "m", state, d.Facts(aliases=aliases))
    assert found.why_none is why and not found.reaching
    text = d.render([found])
    assert text.startswith(f"m: none ({why.value})")


def test_reasons_carry_what_the_guest_said():
    shell = Shell([(r"^grep -q", 0, ""), (r"modprobe -r", 1, ""), (r"^grep '", 0, "m 16384 2 - Live 0x0\n")])
    assert d.discover_one(shell, "m", "module", d.Facts()).notes == ("already loaded, refcount 2",)
    shell = Shell([(r"^grep -q", 1, ""), (r"@@@load", 0, "@@@load\nmodprobe: ERROR: No such device\n@@@rc 1\n")])
    assert d.discover_one(shell, "m", "module", d.Facts()).notes == ("modprobe: ERROR: No such device",)


def test_aliases_and_devnames_are_read_from_the_module_folder(tmp_path):
    (tmp_path / "modules.alias").write_text("# Aliases\nalias fs-vfat vfat\nalias devname:uhid uhid\n")
    (tmp_path / "modules.devname").write_text("# Device nodes\nuhid uhid c10:239\nfuse fuse c10:229\n")
    facts = d.facts_of(tmp_path, ["vfat", "uhid", "fuse", "absent"])
    assert facts["vfat"].aliases == ("fs-vfat",)
    assert facts["uhid"].aliases == ("devname:uhid",) and facts["uhid"].devname == ("uhid",)
    assert facts["fuse"].aliases == ("devname:fuse",)
    assert facts["absent"] == d.Facts()


@pytest.mark.parametrize("bad", ["", "a b", "../x", "x;rm"])
def test_a_bad_module_name_is_one_line(bad):
    with pytest.raises(HarnessError, match="is not a module name"):
        d.check_names([bad])


def test_json_lists_ops_and_reasons():
    found = d.Discovery("m", why_none=d.NoOps.HARDWARE, notes=("x",))
    data = json.loads(d.to_json([found]))
    assert data == [
        {"module": "m", "ops": [], "entries": [], "registered": {}, "notes": ["x"], "why_none": "needs hardware"}
    ]


def test_the_summary_counts_modules_by_the_kind_of_their_first_op_and_the_rest_by_reason():
    def reached(module, *kinds):
        return d.Discovery(module, entries=tuple(d.Entry(f"op{i}", "s", k, True) for i, k in enumerate(kinds)))

    found = [
        reached("a", Kind.CRYPTO),
        reached("b", Kind.FILESYSTEM, Kind.CRYPTO),
        reached("c", Kind.CRYPTO),
        d.Discovery("e", entries=(d.Entry("op", "s", Kind.NET, False, "EINVAL"),), why_none=d.NoOps.UNREACHED),
        d.Discovery("f", why_none=d.NoOps.HARDWARE),
        d.Discovery("g", why_none=d.NoOps.HARDWARE),
    ]
    assert d.summary(found) == [
        "3 of 6 modules have ops that reach them",
        "  by kind: filesystem 1, crypto 2",
        "  the rest: needs hardware 2, no derived op reached it 1",
    ]
    assert d.summary([]) == ["0 of 0 modules have ops that reach them"]


@pytest.mark.parametrize(
    ("module", "op"),
    [
        ("nls_cp437", "mount:/dev/loop0:vfat:codepage=437"),
        ("nls_iso8859_1", "mount:/dev/loop0:vfat:iocharset=iso8859-1"),
        ("nls_utf8", "mount:/dev/loop0:vfat:iocharset=utf8"),
    ],
)
def test_an_nls_table_is_reached_by_a_vfat_mount_that_asks_for_it(module, op):
    cands, _ = d.candidates(module, d.Facts(), {}, [])
    assert ops_of(cands) == [(op,)]
    assert cands[0].kmods == ("loop", "vfat") and cands[0].setup[-1] == "mkdosfs /dev/loop0 >/dev/null"


@pytest.mark.parametrize("fstype", ["iso9660", "udf"])
def test_a_file_system_busybox_cannot_make_mounts_the_image_every_guest_carries(fstype):
    cands, _ = d.candidates("m", d.Facts(), {"filesystems": (f"\t{fstype}",)}, [])
    assert ops_of(cands) == [(f"mount:/dev/loop0:{fstype}:ro",)]  # both refuse a read-write mount
    assert cands[0].setup == (f"losetup /dev/loop0 /usr/share/harness/fs/{fstype}.img",)
    parse(cands[0].ops[0])


@pytest.mark.parametrize(
    ("alias", "op"),
    [
        ("crypto-authenc", "socket:alg:seqpacket:0:aead:authenc(hmac(sha256),cbc(aes))"),
        ("crypto-rfc7539", "socket:alg:seqpacket:0:aead:rfc7539(chacha20,poly1305)"),
        ("crypto-essiv", "socket:alg:seqpacket:0:skcipher:essiv(cbc(aes),sha256)"),
    ],
)
def test_a_template_is_bound_around_inner_algorithms(alias, op):
    cands, _ = d.candidates("m", d.Facts(aliases=(alias,)), {}, [])
    assert ops_of(cands) == [(op,)]


def test_af_algs_types_are_reached_by_a_bind_of_their_type():
    cands, _ = d.candidates("algif_skcipher", d.Facts(), {}, [])
    assert ops_of(cands) == [("socket:alg:seqpacket:0:skcipher:cbc(aes)",)]


def test_shards_split_the_sorted_names_without_overlap():
    names = [f"m{i:02}" for i in range(10)]
    parts = [d.shard(names, (i, 3)) for i in (1, 2, 3)]
    assert parts[0] == ["m00", "m03", "m06", "m09"]
    assert sorted(sum(parts, [])) == names
    assert d.shard(["b", "a"], None) == ["a", "b"]


@pytest.mark.parametrize("bad", ["0/2", "3/2", "x", "1/", "2-4"])
def test_a_bad_shard_is_one_line(bad):
    with pytest.raises(HarnessError, match="--shard wants I/N"):
        d.parse_shard(bad)


def test_every_loadable_module_or_those_under_folders(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/udf/udf.ko: kernel/lib/crc-itu-t.ko\nkernel/lib/crc-itu-t.ko:\nkernel/fs/nls/nls_cp437.ko.xz:\n"
        "kernel/fs/fat/fat.ko:\nkernel/fsx/odd.ko:\n"
    )
    assert d.loadable(tmp_path) == ["crc_itu_t", "fat", "nls_cp437", "odd", "udf"]
    assert d.loadable(tmp_path, ["kernel/fs"]) == ["fat", "nls_cp437", "udf"]
    assert d.loadable(tmp_path, ["kernel/fs/nls/", "kernel/lib"]) == ["crc_itu_t", "nls_cp437"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["discover"], "discover takes module names or --all-modules (one of the two)"),
        (["discover", "udf", "--all-modules"], "discover takes module names or --all-modules"),
        (["discover", "udf", "--under", "kernel/fs"], "--under goes with --all-modules"),
        (["discover", "--all-modules", "--shard", "5/4"], "--shard wants I/N"),
        (["discover", "no such"], "'no such' is not a module name"),
        (["survey", "--target", "no such"], "'no such' is not a module name"),
        (["survey", "--target", "x.ko"], "survey --target takes target rows and module names"),
        (["survey", "--under", "kernel/fs"], "--under goes with --all-modules"),
    ],
)
def test_discover_and_survey_refuse_bad_input_in_one_line(argv, message, capsys):
    from harness import cli

    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_driver_with_hardware_aliases_only_is_not_loaded_unless_asked():
    loads = [(r"^grep -q", 1, ""), (r"@@@load", 0, "@@@load\n@@@rc 0\n")]
    aliases = ("pci:v00008086d*", "usb:v0BDAp8153*", "pci:v000010ECd*")
    shell = Shell(list(loads))
    found = d.discover_one(shell, "m", "module", d.Facts(aliases=aliases))
    assert found.why_none is d.NoOps.HARDWARE and found.notes == ("only hardware aliases (pci, usb): not loaded",)
    assert not any("modprobe" in c for c in shell.sent), shell.sent
    shell = Shell(list(loads))
    found = d.discover_one(shell, "m", "module", d.Facts(aliases=aliases), load_hardware=True)
    assert found.why_none is d.NoOps.HARDWARE and any("@@@load" in c for c in shell.sent)
    # One alias a generic op can use, and it is loaded.
    shell = Shell(list(loads))
    d.discover_one(shell, "m", "module", d.Facts(aliases=(*aliases, "devname:m")))
    assert any("@@@load" in c for c in shell.sent)


def test_a_module_loaded_at_boot_is_in_use_even_with_hardware_aliases():
    shell = Shell([(r"^grep -q", 0, ""), (r"modprobe -r", 1, ""), (r"^grep '", 0, "m 16384 2 - Live 0x0\n")])
    found = d.discover_one(shell, "m", "module", d.Facts(aliases=("virtio:d00000001v*",)))
    assert found.why_none is d.NoOps.IN_USE


def test_a_guest_that_dies_ends_its_module_and_the_rest_go_on_in_a_new_guest(monkeypatch, tmp_path):
    """A module whose discovery killed the guest is `the guest died`, with the
    console's last splat; the modules after it are discovered in a new guest,
    none lost and none twice."""
    from types import SimpleNamespace

    from harness.guest import image, modtree, vm

    guests = []

    class FakeVm:
        def __init__(self, img, config):
            self.dead = False
            self.log_path = tmp_path / f"guest{len(guests)}.log"
            self.ssh = SimpleNamespace(alive=lambda: not self.dead)
            guests.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def console_text(self):
            return "[    9.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"

    def fake_one(ssh, module, state, facts, load_hardware=False):
        if module == "killer":
            guests[-1].dead = True
        return d.Discovery(module, why_none=d.NoOps.NOTHING)

    monkeypatch.setattr(vm, "Vm", FakeVm)
    monkeypatch.setattr(image, "build_image", lambda kfiles: SimpleNamespace(modtree=object()))
    monkeypatch.setattr(modtree, "module_state", lambda kfiles, name: "module")
    monkeypatch.setattr(d, "facts_of", lambda modules_dir, names: {n: None for n in names})
    monkeypatch.setattr(d, "discover_one", fake_one)
    seen = []
    kfiles = SimpleNamespace(name="k", modules_dir=tmp_path)
    found = d.run(kfiles, ["a", "killer", "b", "c"], each=seen.append)
    assert [f.module for f in found] == ["a", "killer", "b", "c"] == [f.module for f in seen]
    assert [f.why_none for f in found] == [d.NoOps.NOTHING, d.NoOps.KILLED, d.NoOps.NOTHING, d.NoOps.NOTHING]
    assert "BUG: kernel NULL pointer dereference" in found[1].notes[0] and "guest0.log" in found[1].notes[0]
    assert len(guests) == 2


def test_a_guest_that_reset_itself_is_said_to_have_done_so_not_blamed_on_an_old_splat():
    old = "[  955.700544] WARNING: CPU: 1 PID: 11401 at arch/x86/mm/ioremap.c:217 __ioremap_caller+0x2cd/0x340\n"
    reset = "[ 1650.068838] softdog: Initiating system reboot\n"
    assert d.death_cause(old + "[ 1647.1] qla2xxx: driver\n" + reset) == "softdog: Initiating system reboot"
    assert d.death_cause(old) == "warning: WARNING in __ioremap_caller"
    assert d.death_cause("") == "no splat on the console"


@pytest.mark.parametrize(
    ("module", "aliases", "op"),
    [
        ("sch_sfq", ("net-sch-sfq",), "qdisc-add:sfq"),  # 6.9 on: the alias
        ("sch_fq_codel", (), "qdisc-add:fq_codel"),  # before: the module's name
        ("sch_ingress", ("net-sch-ingress", "net-sch-clsact"), "qdisc-add:ingress"),
    ],
)
def test_a_qdisc_module_is_reached_by_adding_a_qdisc_of_its_kind(module, aliases, op):
    cands, _ = d.candidates(module, d.Facts(aliases), {}, [])
    assert ops_of(cands)[0] == (op,) and cands[0].kind is Kind.NET
    assert parse(op).text == op
