"""Target races without a machine: the rows, the spec's bad input, which
module a target is on a kernel, the roles, and the engine on a fake guest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakeguest import OOPS, Behaviour, FakeGuest, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness import cli
from harness.cli import race as race_cli
from harness.errors import HarnessError
from harness.kernels import ROWS, KernelFiles
from harness.race import kinds, targetrace, targets
from harness.race.engine import GuestPayload
from harness.race.ops import parse
from harness.race.outcomes import Control, Verdict
from harness.race.racer import Role
from harness.race.spec import RaceSpec


def test_rows_cover_eight_modules_of_four_kinds_and_their_ops_parse():
    real = [r for r in targets.ROWS.values() if not r.control]
    assert len({r.module for r in real}) >= 8
    assert len({r.kind for r in real}) >= 4
    for row in targets.ROWS.values():
        assert row.ops and all(parse(op).text == op for op in row.ops), row.name
        assert row.why, row.name
    assert [r.name for r in targets.ROWS.values() if r.control] == ["noowner"]


def test_every_row_module_is_a_module_in_the_debug_kernels_fragment():
    """A target built in cannot be unloaded: the debug kernel builds each as =m
    (the fragment names the config option; this checks the modules the rows
    unload are each named there through their option)."""
    fragment = (Path(targets.__file__).resolve().parents[2] / "kconfigs" / "debug.config").read_text()
    option = {
        "vfat": "VFAT_FS",
        "ext4": "EXT4_FS",
        "configfs": "CONFIGFS_FS",
        "null_blk": "BLK_DEV_NULL_BLK",
        "brd": "BLK_DEV_RAM",
        "dummy": "DUMMY",
        "nlmon": "NLMON",
        "uinput": "INPUT_UINPUT",
        "md4": "CRYPTO_MD4",
        "algif_hash": "CRYPTO_USER_API_HASH",
        "can_raw": "CAN_RAW",
        "can_bcm": "CAN",
    }  # CAN_BCM defaults to CAN's value
    for row in targets.ROWS.values():
        if row.source is None:
            assert f"CONFIG_{option[row.module]}=m" in fragment, row.module


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(target="nosuchmodule"), "give its callers with --op"),
        (dict(target="dummy", ops=("opne:/dev/x",)), "unknown"),
        (dict(target="dummy", callers=0), "--callers must be 1..16"),
        (dict(target="dummy", duration_s=0), "--duration"),
        (dict(target="/nonexistent/x.ko", ops=("open:/dev/x",)), "no such .ko file"),
        (dict(target="/nonexistent/dir", ops=("open:/dev/x",)), "not a directory"),
        (dict(target="", ops=("open:/dev/x",)), "empty"),
    ],
)
def test_bad_target_specs_are_one_line(kw, message):
    with pytest.raises(HarnessError, match=message) as err:
        RaceSpec(**kw)
    assert "\n" not in str(err.value)


def test_a_row_brings_its_ops_and_a_user_target_its_own():
    assert RaceSpec(target="dummy").label == "netdev-add"
    spec = RaceSpec(target="minix", ops=("mount:/dev/loop0:minix", "open:/proc/filesystems"))
    assert spec.label == "mount+open" and spec.row is None


def kernel_with(tmp_path: Path, modules: list[str], builtin: list[str]) -> KernelFiles:
    k = KernelFiles(ROWS["6.1"], "6.1.0-99-amd64", "1", tmp_path)
    k.modules_dir.mkdir(parents=True)
    (k.modules_dir / "modules.dep").write_text("".join(f"kernel/{m}.ko:\n" for m in modules))
    (k.modules_dir / "modules.builtin").write_text("".join(f"kernel/{m}.ko\n" for m in builtin))
    return k


def test_resolve_refuses_a_missing_or_built_in_module(tmp_path):
    k = kernel_with(tmp_path, ["dummy", "vfat", "fat", "loop"], ["ext4"])
    assert targetrace.resolve(RaceSpec(target="dummy"), k).module == "dummy"
    vfat = targetrace.resolve(RaceSpec(target="vfat"), k)
    assert vfat.kmods[:2] == ("loop", "fat") and vfat.kmods[-1] == "vfat"
    assert vfat.setup[1] == "losetup /dev/loop0 /tmp/loop0.img" and vfat.setup[2].startswith("mkdosfs /dev/loop0")
    with pytest.raises(HarnessError, match="built into kernel 6.1"):
        targetrace.resolve(RaceSpec(target="ext4"), k)
    with pytest.raises(HarnessError, match="has no module 'nlmon'"):
        targetrace.resolve(RaceSpec(target="nlmon"), k)
    with pytest.raises(HarnessError, match="has no module 'zz'"):
        targetrace.resolve(RaceSpec(target="zz", ops=("open:/dev/zz",)), k)


def test_roles_an_unloader_then_callers_per_op_with_a_mount_folder_each():
    spec = RaceSpec(target="t", ops=("mount:none:configfs", "open:/dev/null"), callers=2, duration_s=3, hold=False)
    roles = targetrace.roles_for(spec, targetrace.ResolvedTarget("configfs", params="x=1"))
    assert [r.role for r in roles] == [Role.UNLOADER] + [Role.CALLER] * 4
    assert {r.parties for r in roles} == {5} and {r.duration_ms for r in roles} == {3000}
    assert roles[0].load == "modprobe" and roles[0].params == "x=1" and roles[0].name == "configfs"
    assert [r.dir for r in roles[1:]] == ["/mnt/target0", "/mnt/target1", None, None]


def test_repro_parses_back_to_the_same_spec():
    spec = RaceSpec(
        target="dummy",
        kernel="6.12",
        ops=("netdev-add:dummy",),
        callers=3,
        duration_s=7,
        seed=42,
        reload="finit",
        contention=1,
    )
    args = cli.parser().parse_args(spec.repro().split()[3:])
    assert race_cli.specs_from_args(args) == [spec]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["race", "--target", "dummy", "--scheme", "refcount"], "--scheme belong to the harness's own schemes"),
        (["race", "--op", "open:/dev/null"], "--op and --callers go with --target"),
        (["race", "--target", "no such"], "'no such' is not a module name"),
        (["race", "--target", "dummy", "--op", "frob:/x"], "unknown"),
    ],
)
def test_cli_bad_target_input_is_one_line_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


# ---------------------------------------------------------------- the engine on a fake guest


class Stages:
    release, describe, lockdep, kasan = "6.1.0-99-fake", "", False, False

    def __init__(self, behaviour: Behaviour, control: bool = False) -> None:
        self.behaviour = behaviour
        self.control = control
        self.guest: FakeGuest | None = None
        self.booted: list[tuple[str, object]] = []

    def kernel_files(self) -> Stages:
        return self  # what fake_resolve below is handed

    guest_modules = FakeStages.guest_modules
    debug_vmlinux = FakeStages.debug_vmlinux
    symbolize = FakeStages.symbolize

    def boot(self, name, payload) -> FakeGuest:
        self.booted.append((name, payload))
        self.guest = FakeGuest(behaviour=self.behaviour)
        return self.guest


@pytest.fixture
def fake_resolve(monkeypatch):
    """The target a fake kernel resolves to: dummy, a control when its Stages say so."""
    monkeypatch.setattr(
        targetrace,
        "resolve",
        lambda spec, stages: targetrace.ResolvedTarget("dummy", kmods=("dummy",), control=stages.control),
    )


@pytest.mark.usefixtures("fake_resolve")
def test_a_target_race_loads_checks_unloads_and_counts_failures_as_facts():
    stages = Stages(Behaviour(lookups=(100, 60), errno="EOPNOTSUPP"))
    report, kept = kinds.race(RaceSpec(target="dummy", duration_s=0.1, hold=False), stages=stages)
    run = report.runs[0]
    assert kept is None and stages.guest.killed
    assert stages.booted == [("target-dummy", GuestPayload((), ("dummy",)))]
    assert run.verdict is Verdict.CLEAN and run.control is Control.NONE and not report.problems()
    assert run.spurious_failures == 0 and run.callers.errors == {"EOPNOTSUPP": 40}
    assert run.target.module == "dummy" and run.target.caller_ops == ("netdev-add",)
    cmds = stages.guest.commands
    assert "/sbin/modprobe dummy" in cmds and "/sbin/rmmod dummy && /sbin/modprobe dummy" in cmds
    assert json.loads(json.dumps(report.to_json()))["runs"][0]["target"]["module"] == "dummy"


@pytest.mark.usefixtures("fake_resolve")
def test_a_target_that_cannot_be_unloaded_or_whose_path_is_missing_is_one_line():
    stages = Stages(Behaviour(failing=("/sbin/rmmod dummy && /sbin/modprobe dummy",)))
    with pytest.raises(HarnessError, match="target dummy cannot be unloaded here"):
        kinds.race(RaceSpec(target="dummy", duration_s=0.1), stages=stages)
    assert stages.guest.killed
    stages = Stages(Behaviour(failing=("test -e /dev/nope",)))
    with pytest.raises(HarnessError, match="/dev/nope does not exist in the guest"):
        kinds.race(RaceSpec(target="x", ops=("open:/dev/nope",), duration_s=0.1), stages=stages)


@pytest.mark.parametrize(
    "console, verdict, control, problems",
    [(OOPS, Verdict.CRASHED, Control.FIRED, 0), ("", Verdict.CLEAN, Control.MISSED, 1)],
)
@pytest.mark.usefixtures("fake_resolve")
def test_the_broken_owner_control_must_crash(console, verdict, control, problems):
    stages = Stages(Behaviour(console=console), control=True)
    report, _ = kinds.race(RaceSpec(target="noowner", duration_s=0.1), stages=stages)
    run = report.runs[0]
    assert (run.verdict, run.control, len(report.problems())) == (verdict, control, problems)


@pytest.mark.usefixtures("fake_resolve")
def test_a_crash_of_a_real_target_is_a_finding_exit_1():
    report, _ = kinds.race(RaceSpec(target="dummy", duration_s=0.1), stages=Stages(Behaviour(console=OOPS)))
    assert report.runs[0].verdict is Verdict.CRASHED and report.problems()


def test_by_default_each_op_gets_quick_and_held_callers_and_no_hold_keeps_the_quick_ones():
    ops = ("open:/dev/x", "exec:true", "mount:none:tmpfs:hold=0", "netdev-add:dummy:hold=40")
    spec = RaceSpec(target="t", ops=ops, callers=2, duration_s=3)
    rows = [(op.kind, ms) for op, ms in spec.caller_rows]
    assert (
        rows
        == [("open", 0)] * 2 + [("open", 250)] * 2 + [("exec", 0)] * 2 + [("mount", 0)] * 2 + [("netdev-add", 40)] * 2
    )
    roles = targetrace.roles_for(spec, targetrace.ResolvedTarget("t"))
    assert {r.parties for r in roles} == {11} and len(roles) == 11
    assert [r.hold_us for r in roles[1:]] == [None, None, 250000, 250000, None, None, None, None, 40000, 40000]
    assert [r.dir for r in roles[1:]][6:8] == ["/mnt/target6", "/mnt/target7"]
    quick = RaceSpec(target="t", ops=ops, callers=2, duration_s=3, hold=False)
    assert [(op.kind, ms) for op, ms in quick.caller_rows] == [(k, ms) for k, ms in rows if not (k == "open" and ms)], (
        "--no-hold drops the default held callers, not an op's own hold="
    )
    assert spec.label == quick.label == "open+exec+mount+netdev-add"


def test_no_hold_is_in_the_repro_and_parses_back_and_old_lines_still_hold():
    spec = RaceSpec(target="dummy", ops=("open:/dev/x:read=4",), callers=2, hold=False)
    assert " --callers 2 --no-hold " in spec.repro()
    assert race_cli.specs_from_args(cli.parser().parse_args(spec.repro().split()[3:])) == [spec]
    held = RaceSpec(target="dummy", ops=("open:/dev/x:read=4:hold=30",))
    assert "--no-hold" not in held.repro() and "open:/dev/x:read=4:hold=30" in held.repro()
    assert race_cli.specs_from_args(cli.parser().parse_args(held.repro().split()[3:])) == [held]


def test_no_hold_goes_with_a_target_only(capsys):
    assert cli.main(["race", "--no-hold"]) == 2
    assert "--no-hold too" in capsys.readouterr().err


PROJECT_TARGETS = """
[tool.harness.targets.rmd160]
module = "rmd160"
kind = "crypto"
ops = ["socket:alg:seqpacket:0:hash:rmd160"]
kmods = ["algif_hash"]
why = "a hash"
"""


def test_a_project_names_its_own_targets_in_its_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PROJECT_TARGETS)
    monkeypatch.chdir(tmp_path)
    row = targets.get_target("rmd160")
    assert (row.module, row.kind, row.ops, row.kmods) == (
        "rmd160",
        targets.Kind.CRYPTO,
        ("socket:alg:seqpacket:0:hash:rmd160",),
        ("algif_hash",),
    )
    assert "rmd160" in targets.names() and targets.find("vfat") is targets.ROWS["vfat"]
    from harness.race.spec import RaceSpec

    spec = RaceSpec(target="rmd160", duration_s=1)
    assert spec.row == row and [op.text for op in spec.op_rows] == list(row.ops)


@pytest.mark.parametrize(
    "text, error",
    [
        ('[tool.harness.targets.x]\nmodule = "x"\n', "wants module and ops"),
        ('[tool.harness.targets.x]\nmodule = "x"\nops = []\n', "ops \\(at least one\\)"),
        ('[tool.harness.targets.x]\nmodule = "x"\nops = ["open:/dev/x"]\nkind = "gpu"\n', "kind is one of"),
        ('[tool.harness.targets.vfat]\nmodule = "x"\nops = ["open:/dev/x"]\n', "is a ready-made target"),
        ('[tool.harness.targets.x]\nmodule = "x"\nops = ["open:/dev/x"]\nsetp = []\n', "wants module and ops"),
        ("[tool.harness.targets\n", "cannot read"),
    ],
)
def test_a_bad_project_target_is_one_line(tmp_path, monkeypatch, text, error):
    (tmp_path / "pyproject.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HarnessError, match=error):
        targets.find("x")


def test_a_project_target_of_its_own_module_folder_is_found_beside_its_pyproject(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.harness.targets.mine]\nmodule = "mine"\nsource = "src/mine"\nops = ["open:/dev/mine"]\n'
    )
    monkeypatch.chdir(tmp_path)
    assert targets.get_target("mine").source == str(tmp_path / "src" / "mine")
