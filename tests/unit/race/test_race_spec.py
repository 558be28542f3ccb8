"""Race specs: validation before anything boots, roles, and repro commands
that rerun exactly the same run."""

import shlex
from pathlib import Path

import pytest

from harness.cli import parser
from harness.cli import race as race_cli
from harness.errors import HarnessError
from harness.race import engine as race
from harness.race import schemerace
from harness.race.kbuild import ModuleSetSpec


def _spec_from_argv(argv):
    (spec,) = race_cli.specs_from_args(parser().parse_args(argv))
    return spec


def test_repro_reruns_exactly_this_run():
    spec = race.RaceSpec(
        kernel="6.12",
        schemes=("refcount", "rwsem"),
        workloads=("mount",),
        duration_s=7.5,
        seed=42,
        knobs=(("call_delay_us", 1000), ("exit_delay_ms", 50)),
        rcu_expedited=True,
        reload="modprobe",
        unload_pause_ms=20,
        contention=2,
        guest_packages=("strace", "bash"),
    )
    assert spec.guest_packages == ("bash", "strace")
    argv = shlex.split(spec.repro("rwsem", "mount"))
    assert argv[argv.index("--guest-packages") + 1] == "bash,strace"
    assert argv[:4] == ["python", "-m", "harness", "race"]
    again = _spec_from_argv(argv[3:])
    assert again == race.RaceSpec(**{**spec.__dict__, "schemes": ("rwsem",)})


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"schemes": ("nope",)}, "unknown scheme"),
        ({"workloads": ("fly",)}, "unknown workload"),
        ({"duration_s": 0}, "--duration"),
        ({"knobs": (("exit_delay_ms", -1),)}, "exit_delay_ms"),
        ({"kernel": "9.9"}, "unknown kernel spec"),
        ({"unload_pause_ms": -5}, "--unload-pause"),
        ({"guest_packages": ("bash,",)}, "empty element"),
    ],
)
def test_bad_specs_are_refused_before_anything_runs(kwargs, msg):
    with pytest.raises(HarnessError, match=msg):
        race.RaceSpec(**kwargs)


def test_knob_parsing():
    assert race_cli.parse_knobs(None) == race.DEFAULT_KNOBS
    assert tuple(race_cli.parse_knobs(["exit_delay_ms=10", "call_delay_us=0"]).items()) == (
        ("call_delay_us", 0),
        ("exit_delay_ms", 10),
    )
    # one knob given: the other defaults stay (a lost call_delay_us silences the negative control)
    assert tuple(race_cli.parse_knobs(["exit_delay_ms=50"]).items()) == (("call_delay_us", 1000), ("exit_delay_ms", 50))
    assert tuple(race_cli.parse_knobs(["exit_tail_ms=5"]).items()) == (
        ("call_delay_us", 1000),
        ("exit_delay_ms", 200),
        ("exit_tail_ms", 5),
    )
    with pytest.raises(HarnessError, match="NAME=VALUE"):
        race_cli.parse_knobs(["exit_delay_ms"])


class _Mods:
    spec = ModuleSetSpec("rwsem-deferred")


def test_roles_pit_the_unloader_against_the_workloads_callers():
    spec = race.RaceSpec(
        schemes=("rwsem-deferred",), workloads=("all",), duration_s=3, seed=9, knobs=(("exit_delay_ms", 200),)
    )
    roles = [r.argv() for r in schemerace.roles_for("all", _Mods, spec, "6.1.0-56-amd64")]
    assert [r[1] for r in roles] == ["unloader", "looker", "mounter", "fsmounter"]
    unloader = roles[0]
    assert unloader[unloader.index("--ko") + 1] == "/lib/modules/6.1.0-56-amd64/extra/rwd_prov0.ko"
    assert unloader[unloader.index("--params") + 1] == "exit_delay_ms=200"
    for r in roles:
        assert r[r.index("--parties") + 1] == "4" and r[r.index("--duration-ms") + 1] == "3000"
    assert roles[2][roles[2].index("--fstype") + 1] == "rwdfs"
    assert roles[3][roles[3].index("--fstype") + 1] == "rwd_prov0fs"


# The repro lines the scheme and target pipelines wrote before they were one
# engine: a rerun command must not change under a user's feet.
REPRO_BEFORE = [
    (
        dict(),
        None,
        "python -m harness race --kernel 6.1 --scheme refcount,rwsem,rwsem-deferred,unsafe --workload lookup,mount "
        "--duration 15 --seed 1 --accel auto --providers 2 --reload finit --unload-pause 100 "
        "--knob call_delay_us=1000 --knob exit_delay_ms=200",
    ),
    (
        dict(
            kernel="6.12",
            schemes=("rwsem", "refcount"),
            workloads=("lookup",),
            duration_s=2.5,
            seed=9,
            knobs={"call_delay_us": 5},
            accel="tcg",
            rcu_expedited=True,
            providers=3,
            reload="modprobe",
            unload_pause_ms=0,
            contention=2,
            cold_boot=True,
            guest_packages=("strace", "bash"),
            module_src=("tests/project/mydrv",),
        ),
        ("rwsem", "lookup"),
        "python -m harness race --kernel 6.12 --scheme rwsem --workload lookup --duration 2.5 --seed 9 --accel tcg "
        "--providers 3 --reload modprobe --unload-pause 0 --knob call_delay_us=5 --rcu-expedited --contention 2 "
        "--cold-boot --guest-packages bash,strace --module-src tests/project/mydrv",
    ),
    (
        dict(target="dummy"),
        None,
        "python -m harness race --kernel 6.1 --target dummy --callers 1 --duration 15 --seed 1 --accel auto "
        "--reload modprobe --unload-pause 100",
    ),
    (
        dict(
            target="vfat",
            kernel="6.12",
            ops=("open:/dev/x:read=4", "mount:/dev/loop0:vfat"),
            callers=3,
            duration_s=1.5,
            seed=4,
            accel="tcg",
            rcu_expedited=True,
            reload="finit",
            unload_pause_ms=5,
            contention=1,
            cold_boot=True,
            guest_packages=("strace",),
        ),
        None,
        "python -m harness race --kernel 6.12 --target vfat --op open:/dev/x:read=4 --op mount:/dev/loop0:vfat "
        "--callers 3 --duration 1.5 --seed 4 --accel tcg --reload finit --unload-pause 5 --rcu-expedited "
        "--contention 1 --cold-boot --guest-packages strace",
    ),
]


@pytest.mark.parametrize("kw, run, line", REPRO_BEFORE)
def test_repro_lines_are_those_of_the_two_pipelines_before(kw, run, line, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[3])  # --module-src as the user gave it
    assert race.RaceSpec(**kw).repro(*(run or ())) == line


def test_one_settings_record_resolves_its_kernel_once(monkeypatch):
    from harness import kernels

    row = kernels.get_spec("6.12")
    monkeypatch.setattr(kernels, "get_spec", lambda name: pytest.fail(f"{name} looked up again"))
    spec = race.RaceSpec(kernel=row, target="dummy")
    assert spec.kernel is row and spec.kernel_name == "6.12" and spec.reload == "modprobe"
    assert race.RaceSpec(kernel=row).reload == "finit"
