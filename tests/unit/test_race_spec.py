"""Race specs: validation before anything boots, roles, and repro commands
that rerun exactly the same run."""

import shlex

import pytest

from harness import cli
from harness.cli import race as race_cli
from harness.cli import parser
from harness.errors import HarnessError
from harness.race import engine as race
from harness.race.kbuild import ModuleSetSpec


def _spec_from_argv(argv):
    (spec,) = race_cli.specs_from_args(parser().parse_args(argv))
    return spec


def test_repro_reruns_exactly_this_run():
    spec = race.RaceSpec(kernel="6.12", schemes=("refcount", "rwsem"), workloads=("mount",), duration_s=7.5,
                         seed=42, knobs=(("call_delay_us", 1000), ("exit_delay_ms", 50)), rcu_expedited=True,
                         reload="modprobe",
                         unload_pause_ms=20, contention=2, guest_packages=("strace", "bash"))
    assert spec.guest_packages == ("bash", "strace")
    argv = shlex.split(spec.repro("rwsem", "mount"))
    assert argv[argv.index("--guest-packages") + 1] == "bash,strace"
    assert argv[:4] == ["python", "-m", "harness", "race"]
    again = _spec_from_argv(argv[3:])
    assert again == race.RaceSpec(**{**spec.__dict__, "schemes": ("rwsem",)})


@pytest.mark.parametrize("kwargs, msg", [
    ({"schemes": ("nope",)}, "unknown scheme"),
    ({"workloads": ("fly",)}, "unknown workload"),
    ({"duration_s": 0}, "--duration"),
    ({"knobs": (("exit_delay_ms", -1),)}, "exit_delay_ms"),
    ({"kernel": "9.9"}, "unknown kernel spec"),
    ({"unload_pause_ms": -5}, "--unload-pause"),
    ({"guest_packages": ("bash,",)}, "empty element"),
])
def test_bad_specs_are_refused_before_anything_runs(kwargs, msg):
    with pytest.raises(HarnessError, match=msg):
        race.RaceSpec(**kwargs)


def test_knob_parsing():
    assert race_cli.parse_knobs(None) == race.DEFAULT_KNOBS
    assert tuple(race_cli.parse_knobs(["exit_delay_ms=10", "call_delay_us=0"]).items()) == (("call_delay_us", 0), ("exit_delay_ms", 10))
    # one knob given: the other defaults stay (a lost call_delay_us silences the negative control)
    assert tuple(race_cli.parse_knobs(["exit_delay_ms=50"]).items()) == (("call_delay_us", 1000), ("exit_delay_ms", 50))
    assert tuple(race_cli.parse_knobs(["exit_tail_ms=5"]).items()) == (("call_delay_us", 1000), ("exit_delay_ms", 200),
                                                    ("exit_tail_ms", 5))
    with pytest.raises(HarnessError, match="NAME=VALUE"):
        race_cli.parse_knobs(["exit_delay_ms"])


class _Mods:
    spec = ModuleSetSpec("rwsem-deferred")


def test_roles_pit_the_unloader_against_the_workloads_callers():
    spec = race.RaceSpec(schemes=("rwsem-deferred",), workloads=("all",), duration_s=3, seed=9,
                         knobs=(("exit_delay_ms", 200),))
    roles = [r.argv() for r in race.roles_for("all", _Mods, spec, "6.1.0-56-amd64")]
    assert [r[1] for r in roles] == ["unloader", "looker", "mounter", "fsmounter"]
    unloader = roles[0]
    assert unloader[unloader.index("--ko") + 1] == "/lib/modules/6.1.0-56-amd64/extra/rwd_prov0.ko"
    assert unloader[unloader.index("--params") + 1] == "exit_delay_ms=200"
    for r in roles:
        assert r[r.index("--parties") + 1] == "4" and r[r.index("--duration-ms") + 1] == "3000"
    assert roles[2][roles[2].index("--fstype") + 1] == "rwdfs"
    assert roles[3][roles[3].index("--fstype") + 1] == "rwd_prov0fs"
