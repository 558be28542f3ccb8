"""The lock-order control (`rwsem-unsorted`) and the two-bus workload
(`twobus`, claim 5's race) without QEMU: lock classes in the templates, the
rows, the roles, and how the report judges a run with and without lockdep."""

from __future__ import annotations

import json
import re
import shlex
from types import SimpleNamespace

import pytest

from fakeguest import OOPS, RELEASE, WARNING, Behaviour, FakeGuest, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness.cli import parser
from harness.cli import race as race_cli
from harness.cli.race import specs_from_args
from harness.errors import HarnessError
from harness.exitcodes import ExitStatus
from harness.kernels import KernelFiles
from harness.race import engine as race
from harness.race import kbuild, kinds, schemerace
from harness.race.kbuild import ModuleSetSpec, render
from harness.race.outcomes import Control, Verdict
from harness.race.schemes import (
    DEFAULT_SCHEMES,
    SCHEMES,
    WORKLOADS,
    Caller,
    LockOrder,
    Workload,
    bus_lock_class,
    lock_order_control,
)

# What a PROVE_LOCKING kernel prints when the two gates lock ABBA (6.12 format).
LOCKDEP_ABBA = """\
[   31.100000] ======================================================
[   31.100001] WARNING: possible circular locking dependency detected
[   31.100002] 6.12.117-debug #1 Not tainted
[   31.100003] ------------------------------------------------------
[   31.100004] racer/412 is trying to acquire lock:
[   31.100005] ffffffffc0a0c0d0 (rwu_bus0_rwsem){++++}-{4:4}, at: rwsems_wlock+0x9a/0x130 [rwu_core]
[   31.100006]
[   31.100006] but task is already holding lock:
[   31.100007] ffffffffc0a0c100 (rwu_bus1_rwsem){++++}-{4:4}, at: rwsems_wlock+0x9a/0x130 [rwu_core]
[   31.100008]
[   31.100008] which lock already depends on the new lock.
[   31.100009]
[   31.100010] the existing dependency chain (in reverse order) is:
[   31.100011]
[   31.100011] -> #1 (rwu_bus1_rwsem){++++}-{4:4}:
[   31.100012]        down_write+0x3a/0x50
[   31.100013]        rwsems_wlock+0x9a/0x130 [rwu_core]
[   31.100014]
[   31.100014] -> #0 (rwu_bus0_rwsem){++++}-{4:4}:
[   31.100015]        __lock_acquire+0x1d2a/0x3160
[   31.100016]
[   31.100016]  Possible unsafe locking scenario:
[   31.100017]
[   31.100017]        CPU0                    CPU1
[   31.100018]        ----                    ----
[   31.100019]   lock(rwu_bus1_rwsem);
[   31.100020]                                lock(rwu_bus0_rwsem);
[   31.100021]                                lock(rwu_bus1_rwsem);
[   31.100022]   lock(rwu_bus0_rwsem);
[   31.100023]
[   31.100023]  *** DEADLOCK ***
[   31.100024]
[   31.100025] stack backtrace:
[   31.100026] CPU: 1 UID: 0 PID: 412 Comm: racer Not tainted 6.12.117-debug #1
[   31.100027] Call Trace:
[   31.100028]  <TASK>
[   31.100029]  dump_stack_lvl+0x5d/0x80
[   31.100030]  print_circular_bug+0x26a/0x340
[   31.100031]  </TASK>
"""
# A lockdep report about some other lock: not the one the control is about.
LOCKDEP_OTHER = """\
[   31.100000] ======================================================
[   31.100001] WARNING: possible circular locking dependency detected
[   31.100004] kworker/0:1/12 is trying to acquire lock:
[   31.100005] ffffffff82a0c0d0 (cpu_hotplug_lock){++++}-{0:0}, at: static_key_slow_inc+0xe/0x20
[   31.100006] but task is already holding lock:
[   31.100007] ffffffff82a0c100 (jump_label_mutex){+.+.}-{4:4}, at: static_key_slow_inc+0x9/0x20
[   31.100027] Call Trace:
[   31.100029]  dump_stack_lvl+0x5d/0x80
"""
HUNG_TASK = """\
[   24.000000] INFO: task racer:412 blocked for more than 5 seconds.
[   24.000001]       Not tainted 6.1.0-57-amd64 #1 Debian 6.1.192-3
[   24.000002] "echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.
[   24.000003] task:racer           state:D stack:0     pid:412   ppid:400    flags:0x00004002
[   24.000004] Call Trace:
[   24.000005]  <TASK>
[   24.000006]  __schedule+0x34d/0x9e0
[   24.000007]  schedule+0x5a/0xd0
[   24.000008]  rwsem_down_write_slowpath+0x2b5/0x690
[   24.000009]  down_write+0x5b/0x60
[   24.000010]  rwsems_wlock+0x9a/0x130 [rwu_core]
[   24.000011]  rwu_gate_run+0x6c/0x160 [rwu_core]
[   24.000012]  </TASK>
"""


# ---------------------------------------------------------------- templates: one lock class per bus


def _code(text: str) -> str:
    """C text without comments."""
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("buses", kbuild.BUS_COUNTS)
def test_every_bus_rwsem_has_a_lock_class_of_its_own(scheme, buses, tmp_path):
    spec = ModuleSetSpec(scheme, buses=buses)
    render(spec, tmp_path)
    bus = (tmp_path / f"{spec.prefix}_core_bus.c").read_text()
    p = spec.prefix
    assert f"static struct lock_class_key {p}_bus_keys[{p.upper()}_NR_BUSES];" in bus
    names = re.search(rf"{p}_bus_lock_names\[{p.upper()}_NR_BUSES\] = \{{(.*?)\}};", bus, re.S).group(1)
    assert re.findall(r'"([^"]+)"', names) == [bus_lock_class(p, i) for i in range(buses)]
    assert (
        f"lockdep_set_class_and_name(&{p}_buses[i].rwsem, &{p}_bus_keys[i],\n\t\t\t\t\t   {p}_bus_lock_names[i]);"
    ) in bus
    assert "#include <linux/lockdep.h>" in (tmp_path / f"{p}_bus.h").read_text()


def test_unsorted_chain_keeps_registration_order_and_locks_each_rwsem_once(tmp_path):
    render(ModuleSetSpec("rwsem-unsorted", buses=2), tmp_path / "u")
    render(ModuleSetSpec("rwsem", buses=2), tmp_path / "s")
    unsorted = _code((tmp_path / "u" / "rwu_core_bus.c").read_text())
    rwsem = _code((tmp_path / "s" / "rw_core_bus.c").read_text())
    for text in (unsorted, rwsem):
        # duplicates need not be neighbours once the chain is unsorted
        assert "if (!" in text and "_rwsem_listed(locked, n, el->rwsem) &&" in text
    assert "list_add_tail(&el->list, &mc->rwsems);" in unsorted and "rwsems_add_sorted" not in unsorted
    assert "rwsems_add_sorted(&mc->rwsems, el);" in rwsem


# ---------------------------------------------------------------- rows


def test_rows_say_which_run_is_a_lock_order_control():
    twobus, lookup = WORKLOADS["twobus"], WORKLOADS["lookup"]
    assert SCHEMES["rwsem-unsorted"].lock_order is LockOrder.REGISTRATION
    assert not SCHEMES["rwsem-unsorted"].negative_control
    assert (twobus.buses, twobus.unloaded, twobus.providers, twobus.hung_task_timeout_s) == (2, (0, 1), 2, 5)
    assert twobus.opposite_orders and not lookup.opposite_orders
    assert [ModuleSetSpec("rwsem", buses=2).bus_order(i) for i in twobus.unloaded] == [[0, 1], [1, 0]]
    assert lock_order_control(SCHEMES["rwsem-unsorted"], twobus)
    assert not lock_order_control(SCHEMES["rwsem-unsorted"], lookup), "one bus: nothing to order"
    for sorted_scheme in ("rwsem", "rwsem-deferred", "refcount", "unsafe"):
        assert not lock_order_control(SCHEMES[sorted_scheme], twobus), sorted_scheme
    # two unloaded providers with the same parity register in the same order
    same = Workload("same", (Caller("looker"),), True, buses=2, unloaded=(0, 2))
    assert not same.opposite_orders and same.providers == 3


def test_rwsem_unsorted_is_not_raced_by_default():
    assert "rwsem-unsorted" not in DEFAULT_SCHEMES
    assert race.RaceSpec().schemes == DEFAULT_SCHEMES == ("refcount", "rwsem", "rwsem-deferred", "unsafe")
    args = parser().parse_args(["race"])
    assert specs_from_args(args)[0].schemes == DEFAULT_SCHEMES


@pytest.mark.parametrize(
    "make, msg",
    [
        (lambda: Caller("unloader"), "caller role"),
        (lambda: Caller("fsmounter", bus=1), "no bus"),
        (lambda: Workload("x", (Caller("looker", bus=1),), True), "bus"),
    ],
)
def test_bad_rows_are_refused(make, msg):
    with pytest.raises(HarnessError, match=msg):
        make()


# ---------------------------------------------------------------- spec and roles


def _spec_from_argv(argv):
    (spec,) = race_cli.specs_from_args(parser().parse_args(argv))
    return spec


def test_twobus_spec_from_the_command_line():
    spec = _spec_from_argv(
        ["race", "--kernel", "6.1", "--scheme", "rwsem-unsorted,rwsem", "--workload", "twobus", "--seed", "3"]
    )
    assert spec.schemes == ("rwsem-unsorted", "rwsem") and spec.workloads == ("twobus",)
    assert spec.buses == 2 and spec.hung_task_timeout_s == 5
    again = _spec_from_argv(shlex.split(spec.repro("rwsem-unsorted", "twobus"))[3:])
    assert again == race.RaceSpec(**{**spec.__dict__, "schemes": ("rwsem-unsorted",)})
    one_bus = _spec_from_argv(["race", "--workload", "lookup,mount"])
    assert one_bus.buses == 1 and one_bus.hung_task_timeout_s == 0


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"workloads": ("lookup", "twobus")}, "need different module builds"),
        ({"workloads": ("twobus",), "providers": 1}, "needs --providers 2"),
    ],
)
def test_bad_twobus_specs_are_refused(kwargs, msg):
    with pytest.raises(HarnessError, match=msg):
        race.RaceSpec(**kwargs)


def _opt(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_twobus_roles_are_claim5s():
    """Two unloaders (prov0 registered on 0,1, prov1 on 1,0), each provider
    looked up on the bus it registered second, all at one barrier."""
    spec = race.RaceSpec(
        schemes=("rwsem-unsorted",),
        workloads=("twobus",),
        duration_s=15,
        seed=5,
        knobs=(("exit_delay_ms", 20),),
        unload_pause_ms=20,
    )
    mods = FakeStages({}).modules("rwsem-unsorted")
    roles = [r.argv() for r in schemerace.roles_for("twobus", mods, spec, RELEASE)]
    assert [(r[1], _opt(r, "--name"), _opt(r, "--bus")) for r in roles] == [
        ("unloader", "rwu_prov0", None),
        ("unloader", "rwu_prov1", None),
        ("looker", "rwu_prov0", "1"),
        ("looker", "rwu_prov1", "0"),
    ]
    assert [_opt(r, "--ko") for r in roles[:2]] == [f"/lib/modules/{RELEASE}/extra/rwu_prov{i}.ko" for i in (0, 1)]
    assert {_opt(r, "--pause-us") for r in roles[:2]} == {"20000"}
    assert {_opt(r, "--params") for r in roles[:2]} == {"exit_delay_ms=20"}
    assert {(_opt(r, "--parties"), _opt(r, "--duration-ms")) for r in roles} == {("4", "15000")}
    assert {_opt(r, "--ctl") for r in roles[2:]} == {"/dev/rwu_ctl"}


def test_one_bus_roles_are_unchanged():
    """The rows' callers keep the command lines of before: no --bus, no --data."""
    spec = race.RaceSpec(schemes=("rwsem",), workloads=("all",), duration_s=1)
    roles = [r.argv() for r in schemerace.roles_for("all", FakeStages({}).modules("rwsem"), spec, RELEASE)]
    assert [r[1] for r in roles] == ["unloader", "looker", "mounter", "fsmounter"]
    assert all("--bus" not in r and "--data" not in r for r in roles)
    assert [_opt(r, "--dir") for r in roles[2:]] == ["/mnt/bus", "/mnt/own"]


def test_prepare_loads_every_provider_a_workload_unloads():
    guest = FakeGuest()
    spec = race.RaceSpec(schemes=("rwsem",), workloads=("twobus",))
    schemerace.prepare_guest(guest, FakeStages({}).modules("rwsem"), spec)
    assert guest.commands == [
        "mkdir -p /mnt/bus /mnt/own && /sbin/modprobe rw_core && /sbin/modprobe rw_prov0 && /sbin/modprobe rw_prov1"
    ]


def test_pipeline_builds_two_buses_and_reads_lockdep_from_the_config(monkeypatch, tmp_path):

    built = []
    configs = {
        "6.1": {"CONFIG_LOCKDEP": "y", "CONFIG_DEBUG_LOCK_ALLOC": "y"},  # no lock-order checks
        "6.12": {"CONFIG_PROVE_LOCKING": "y", "CONFIG_LOCKDEP": "y"},
    }

    def fetch(spec, quiet=False):
        k = SimpleNamespace(name=spec.name, release=f"{spec.name}-fake", describe="fake", config=configs[spec.name])
        k.lockdep, k.kasan = KernelFiles.lockdep.fget(k), KernelFiles.kasan.fget(k)  # the real readers of .config
        return k

    monkeypatch.setattr(race.kernels, "fetch", fetch)
    monkeypatch.setattr(kbuild, "build", lambda kfiles, spec: built.append(spec))
    for kernel, lockdep in (("6.1", False), ("6.12", True)):
        stages = race.PipelineStages(race.RaceSpec(kernel=kernel, schemes=("rwsem-unsorted",), workloads=("twobus",)))
        assert stages.lockdep is lockdep
        stages.modules("rwsem-unsorted")
    assert built == [ModuleSetSpec("rwsem-unsorted", providers=2, buses=2)] * 2


# ---------------------------------------------------------------- the report's judgement


def _race(schemes, behaviours, lockdep, workload="twobus"):
    spec = race.RaceSpec(schemes=schemes, workloads=(workload,), duration_s=0.2)
    report, _ = kinds.race(spec, stages=FakeStages(behaviours, lockdep=lockdep))
    return report


@pytest.mark.parametrize(
    "lockdep, behaviour, verdict, control, fails",
    [
        # a PROVE_LOCKING kernel must name the two bus rwsems
        (True, Behaviour(console=LOCKDEP_ABBA), Verdict.WARNED, Control.FIRED, None),
        (True, Behaviour(console=LOCKDEP_ABBA + HUNG_TASK, finish=False), Verdict.WARNED, Control.FIRED, None),
        (True, Behaviour(), Verdict.CLEAN, Control.MISSED, "rwsem-unsorted/twobus: lock-order control missed"),
        (
            True,
            Behaviour(console=LOCKDEP_OTHER),
            Verdict.WARNED,
            Control.MISSED,
            "rwsem-unsorted/twobus: lock-order control missed",
        ),
        (
            True,
            Behaviour(console=HUNG_TASK, finish=False),
            Verdict.WARNED,
            Control.MISSED,
            "rwsem-unsorted/twobus: lock-order control missed",
        ),
        # without lockdep only a real deadlock shows it, and a race may miss the window
        (False, Behaviour(console=HUNG_TASK, finish=False), Verdict.WARNED, Control.FIRED, None),
        (False, Behaviour(finish=False), Verdict.HUNG, Control.FIRED, None),
        (False, Behaviour(), Verdict.CLEAN, Control.NOT_HIT, None),
        (False, Behaviour(lookups=(100, 97)), Verdict.SPURIOUS, Control.NOT_HIT, None),
        (False, Behaviour(console=WARNING), Verdict.WARNED, Control.NOT_HIT, "rwsem-unsorted/twobus: warned"),
        (False, Behaviour(console=OOPS), Verdict.CRASHED, Control.NOT_HIT, "rwsem-unsorted/twobus: crashed"),
        (False, Behaviour(unloads=0), Verdict.NO_RACE, Control.NOT_HIT, "rwsem-unsorted/twobus: no-race"),
        (
            True,
            Behaviour(console=LOCKDEP_ABBA + OOPS),
            Verdict.CRASHED,
            Control.FIRED,
            "rwsem-unsorted/twobus: crashed",
        ),
    ],
)
def test_lock_order_control(lockdep, behaviour, verdict, control, fails):
    report = _race(("rwsem-unsorted",), {"rwsem-unsorted": behaviour}, lockdep)
    (run,) = report.runs
    assert (run.verdict, run.control) == (verdict, control)
    problems = report.problems()
    if fails is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(fails), problems


def test_sorted_schemes_in_twobus_claim_no_deadlock():
    behaviours = {"rwsem": Behaviour(console=HUNG_TASK, finish=False), "rwsem-deferred": Behaviour()}
    report = _race(("rwsem", "rwsem-deferred"), behaviours, lockdep=False)
    assert [(r.verdict, r.control) for r in report.runs] == [
        (Verdict.WARNED, Control.NONE),
        (Verdict.CLEAN, Control.NONE),
    ]
    assert report.problems() == [
        "rwsem/twobus: warned (hung: roles still running 1s after the start) (INFO: task hung in rwsems_wlock)"
    ]


def test_unsorted_on_one_bus_is_judged_like_rwsem():
    report = _race(("rwsem-unsorted",), {"rwsem-unsorted": Behaviour(console=WARNING)}, lockdep=True, workload="lookup")
    assert report.runs[0].control is Control.NONE
    assert report.problems() and report.problems()[0].startswith("rwsem-unsorted/lookup: warned")


def test_cli_twobus_table_json_and_exit_status(capsys, tmp_path):
    out_json = tmp_path / "r.json"

    def run(lockdep, behaviours):
        args = parser().parse_args(
            [
                "race",
                "--duration",
                "0.2",
                "--scheme",
                "rwsem-unsorted,rwsem",
                "--workload",
                "twobus",
                "--json",
                str(out_json),
            ]
        )
        return race_cli.cmd_race(args, stages=lambda spec: FakeStages(behaviours, lockdep=lockdep))

    assert run(False, {}) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "lockdep=0" in out
    assert re.search(r"^rwsem-unsorted\s+twobus\s.*clean \(lock-order control not hit, no lockdep\)$", out, re.M), out
    doc = json.loads(out_json.read_text())
    assert doc["lockdep"] is False and [r["control"] for r in doc["runs"]] == ["not hit, no lockdep", "-"]
    assert [r["ops"]["delete_module"]["ok"] for r in doc["runs"]] == [10, 10], "two unloaders' unloads"

    assert run(True, {"rwsem-unsorted": Behaviour(console=LOCKDEP_ABBA)}) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "lockdep=1" in out and "warned (lock-order control fired)" in out

    assert run(True, {}) == ExitStatus.FINDINGS
    err = capsys.readouterr().err
    assert "FAIL 6.1: rwsem-unsorted/twobus: lock-order control missed" in err
