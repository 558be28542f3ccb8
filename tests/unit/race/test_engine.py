"""The race engine without QEMU: a fake guest whose roles complete, die,
hang, lose SSH or splat, and the verdicts and exit statuses that follow."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from fakeguest import OOPS, RELEASE, WARNING, Behaviour, FakeGuest, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness.cli import main, parser
from harness.cli import race as race_cli
from harness.exitcodes import ExitStatus
from harness.guest.programs import RACER_PATH as GUEST_PATH
from harness.race import engine as race
from harness.race import kinds, schemerace
from harness.race.outcomes import Control, RunEnd, Verdict
from harness.reports.table import render_table


def _spec(**kw) -> race.RaceSpec:
    kw.setdefault("schemes", ("refcount",))
    kw.setdefault("workloads", ("lookup",))
    kw.setdefault("duration_s", 0.2)
    return race.RaceSpec(**kw)


def _one(behaviour: Behaviour, scheme: str = "refcount", workload: str = "lookup", **kw):
    spec = _spec(schemes=(scheme,), workloads=(workload,), **kw)
    stages = FakeStages({scheme: behaviour})
    report, kept = kinds.race(spec, stages=stages)
    assert kept is None
    return report, stages


# ---------------------------------------------------------------- run_roles


def test_roles_start_together_with_exact_command_lines():
    guest = FakeGuest()
    spec = _spec(knobs=(("exit_delay_ms", 50),), seed=4)
    mods = FakeStages({}).modules("refcount")
    roles = schemerace.roles_for("lookup", mods, spec, RELEASE)
    out = race.run_roles(guest, roles, spec.duration_s)
    assert out.end is RunEnd.COMPLETED and out.detail == ""
    assert guest.commands[0] == f"rm -f {race.BARRIER}", "a stale barrier must go first"
    started = [shlex.split(c) for c in guest.commands[1:]]
    assert started == [r.argv() for r in roles]
    unloader, looker = started
    assert unloader[:2] == [GUEST_PATH, "unloader"] and looker[:2] == [GUEST_PATH, "looker"]
    assert unloader[unloader.index("--params") + 1] == "exit_delay_ms=50"
    assert unloader[unloader.index("--ko") + 1] == f"/lib/modules/{RELEASE}/extra/rc_prov0.ko"
    assert looker[looker.index("--parties") + 1] == "2"
    assert [r.role for r in out.results] == ["unloader", "looker"]
    assert out.results[0].ops["delete_module"].ok == 5


@pytest.mark.parametrize(
    "behaviour, end",
    [
        (Behaviour(finish=False, die_after=0.1), RunEnd.GUEST_DIED),
        (Behaviour(finish=False, ssh_lost_after=0.1), RunEnd.SSH_LOST),
        (Behaviour(finish=False), RunEnd.HUNG),
    ],
)
def test_a_guest_that_dies_loses_ssh_or_hangs_ends_the_run(behaviour, end):
    guest = FakeGuest(behaviour=behaviour)
    roles = schemerace.roles_for("lookup", FakeStages({}).modules("refcount"), _spec(), RELEASE)
    t0 = time.monotonic()
    out = race.run_roles(guest, roles, 0.2, slack_s=0.5)
    assert out.end is end
    assert time.monotonic() - t0 < 3, "the engine must not wait for a dead or hung guest's channels"
    assert all(r.error for r in out.results), "no role can have a result"


# ---------------------------------------------------------------- race(): verdicts


@pytest.mark.parametrize(
    "behaviour, verdict",
    [
        (Behaviour(), Verdict.CLEAN),
        (Behaviour(lookups=(100, 90)), Verdict.SPURIOUS),
        (Behaviour(unloads=0), Verdict.NO_RACE),
        (Behaviour(killed_roles=("looker",)), Verdict.ERROR),
        (Behaviour(finish=False), Verdict.HUNG),
        (Behaviour(console=WARNING), Verdict.WARNED),
        (Behaviour(console=OOPS), Verdict.CRASHED),
        (Behaviour(finish=False, die_after=0.1), Verdict.CRASHED),
        (Behaviour(finish=False, ssh_lost_after=0.1), Verdict.CRASHED),
        # precedence: a crash outranks the hang and the role errors it causes
        (Behaviour(finish=False, console=OOPS), Verdict.CRASHED),
        (Behaviour(console=WARNING, lookups=(100, 90)), Verdict.WARNED),
        # no call succeeded while the module was live: nothing reached it
        (Behaviour(lookups=(100, 0)), Verdict.UNREACHED),
        (Behaviour(lookups=(100, 100), live=0), Verdict.UNREACHED),
        (Behaviour(lookups=(100, 90), live=1), Verdict.SPURIOUS),
        (Behaviour(unloads=0, lookups=(100, 0)), Verdict.NO_RACE),
        (Behaviour(console=OOPS, lookups=(100, 0)), Verdict.CRASHED),
    ],
)
def test_verdict_of_one_run(behaviour, verdict):
    report, _ = _one(behaviour)
    (run,) = report.runs
    assert run.verdict is verdict
    assert run.control is Control.NONE


def test_a_dead_guest_is_replaced_for_the_next_workload():
    report, stages = _one(Behaviour(finish=False, die_after=0.1), workload="lookup")
    spec = _spec(workloads=("lookup", "mount"))
    stages = FakeStages({"refcount": Behaviour(console=OOPS)})
    report, _ = kinds.race(spec, stages=stages)
    assert [r.verdict for r in report.runs] == [Verdict.CRASHED, Verdict.CRASHED]
    assert len(stages.guests) == 2, "a splat spoils the guest: the next workload gets a fresh one"
    assert all(g.killed for _, g in stages.guests), "every guest is torn down"


@pytest.mark.parametrize(
    "workload, behaviour, control",
    [
        ("lookup", Behaviour(console=OOPS, killed_roles=("looker",)), Control.FIRED),
        ("lookup", Behaviour(), Control.MISSED),
        ("all", Behaviour(), Control.MISSED),
        ("mount", Behaviour(), Control.BY_DESIGN),
    ],
)
def test_negative_control(workload, behaviour, control):
    report, _ = _one(behaviour, scheme="unsafe", workload=workload)
    assert report.runs[0].control is control


# ---------------------------------------------------------------- cmd_race: exit statuses


def _cmd(argv: list[str], behaviours: dict[str, Behaviour]) -> tuple[int, list[FakeStages]]:
    made: list[FakeStages] = []

    def stages(spec):
        made.append(FakeStages(behaviours))
        return made[-1]

    args = parser().parse_args(["race", "--duration", "0.2", *argv])
    return race_cli.cmd_race(args, stages=stages), made


FIRES = Behaviour(console=OOPS, killed_roles=("looker",))


@pytest.mark.parametrize(
    "behaviours, status, says",
    [
        ({"unsafe": FIRES}, ExitStatus.OK, None),
        ({"refcount": Behaviour(lookups=(100, 80)), "unsafe": FIRES}, ExitStatus.OK, None),
        (
            {"refcount": Behaviour(finish=False, die_after=0.1), "unsafe": FIRES},
            ExitStatus.FINDINGS,
            "refcount/lookup: crashed (guest died",
        ),
        ({"rwsem": Behaviour(finish=False), "unsafe": FIRES}, ExitStatus.FINDINGS, "rwsem/lookup: hung"),
        (
            {"rwsem-deferred": Behaviour(console=WARNING), "unsafe": FIRES},
            ExitStatus.FINDINGS,
            "rwsem-deferred/lookup: warned",
        ),
        ({"refcount": Behaviour(unloads=0), "unsafe": FIRES}, ExitStatus.FINDINGS, "refcount/lookup: no-race"),
        ({"rwsem": Behaviour(killed_roles=("looker",)), "unsafe": FIRES}, ExitStatus.FINDINGS, "rwsem/lookup: error"),
        ({}, ExitStatus.FINDINGS, "unsafe/lookup: negative control missed"),
    ],
)
def test_exit_status_of_a_lookup_race(behaviours, status, says, capsys):
    code, _ = _cmd(["--workload", "lookup"], behaviours)
    err = capsys.readouterr().err
    assert code == status
    fails = [ln for ln in err.splitlines() if ln.startswith("FAIL ")]
    if says is None:
        assert fails == []
    else:
        assert len(fails) == 1 and says in fails[0], err


def test_unsafe_mount_is_clean_by_design_and_says_so(capsys):
    code, _ = _cmd(["--scheme", "unsafe", "--workload", "mount"], {})
    out = capsys.readouterr().out
    assert code == ExitStatus.OK
    assert "clean (control clean by design)" in out


def test_knob_overrides_one_default_and_the_report_lists_every_knob(capsys, tmp_path):
    out_json = tmp_path / "r.json"
    code, _ = _cmd(
        ["--scheme", "unsafe", "--knob", "exit_delay_ms=50", "--json", str(out_json)],
        {"unsafe": Behaviour(console=OOPS, killed_roles=("looker",))},
    )
    out = capsys.readouterr().out
    assert "knobs call_delay_us=1000 exit_delay_ms=50," in out
    doc = json.loads(out_json.read_text())
    assert doc["knobs"] == {"call_delay_us": 1000, "exit_delay_ms": 50}
    assert doc["exit_status"] == code == 0
    assert [r["verdict"] for r in doc["runs"]] == ["crashed", "crashed"]
    assert "--knob call_delay_us=1000 --knob exit_delay_ms=50" in doc["runs"][0]["repro"]


def test_contention_is_recorded_and_hogs_are_gone_after(capsys, tmp_path):
    import subprocess

    out_json = tmp_path / "r.json"
    _cmd(["--scheme", "refcount", "--workload", "lookup", "--contention", "2", "--json", str(out_json)], {})
    doc = json.loads(out_json.read_text())
    assert doc["contention"] == 2 and "--contention 2" in doc["runs"][0]["repro"]
    left = subprocess.run(["pgrep", "-f", "while True: pass"], capture_output=True, text=True).stdout
    assert left.strip() == "", "host CPU hogs outlived the race"


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["--json", "/nonexistent-dir/x.json"], "does not exist"),
        (["--json", "/"], "is a folder"),
        (["--kernel", "6.1,"], "empty element"),
        (["--scheme", "refcount,refcount"], "refcount given twice"),
        (["--scheme", "refcount,"], "empty element"),
        (["--workload", "lookup,lookup"], "lookup given twice"),
        (["--contention", "99"], "--contention"),
    ],
)
def test_bad_race_input_fails_before_any_boot(argv, msg, capsys, monkeypatch):
    booted = []
    monkeypatch.setattr(race, "PipelineStages", lambda spec: booted.append(spec))
    code = main(["race", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitStatus.BAD_INPUT
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
    assert booted == [], "nothing may boot before bad input is refused"


# ---------------------------------------------------------------- a guest broken before the run

KASAN_UAF = (
    "[   12.000000] BUG: KASAN: slab-use-after-free in uf_read_state+0x10/0x30 [uf_core]\n"
    "[   12.000001] Read of size 4 at addr ffff888004a1b2c0 by task racer/90\n"
    "[   12.000002] ==================================================================\n"
)


def test_a_boot_splat_makes_every_run_on_that_guest_a_broken_guest_not_a_finding(capsys):
    stages = FakeStages({"rwsem": Behaviour(boot_console=WARNING)})
    report, _ = kinds.race(_spec(schemes=("rwsem",), workloads=("lookup", "mount")), stages=stages)
    assert [r.verdict for r in report.runs] == [Verdict.BROKEN, Verdict.BROKEN]
    assert report.runs[0].splats == [] and report.runs[0].guest.boot_splats
    assert len(stages.guests) == 2, "a broken guest is replaced for the next workload"
    (why,) = report.problems()[:1]
    assert why.startswith("rwsem/lookup: broken guest: its boot showed WARNING in fake_probe; console log:")
    table = render_table(report)
    assert "rwsem/lookup: broken guest: its boot showed WARNING in fake_probe" in table
    run_json = report.to_json()["runs"][0]
    assert run_json["verdict"] == "broken guest"
    assert [s["title"] for s in run_json["guest"]["boot_splats"]] == ["WARNING in fake_probe"]


def test_a_broken_guest_outranks_a_crash_and_a_control_is_not_judged_on_it():
    report, _ = _one(Behaviour(boot_console=WARNING, console=OOPS), scheme="unsafe")
    (run,) = report.runs
    assert run.verdict is Verdict.BROKEN and run.control is Control.NONE
    assert run.splats, "the run's own splats are still reported"


@pytest.mark.parametrize(
    "debug_locks, verdict, says",
    [
        ((1, 1), Verdict.CLEAN, None),
        ((0, 0), Verdict.BROKEN, "lockdep was already off (debug_locks 0) when the run began"),
        ((1, 0), Verdict.ERROR, "lockdep turned itself off during the run"),
    ],
)
def test_a_lockdep_clean_run_needs_lockdep_on(debug_locks, verdict, says):
    stages = FakeStages({"rwsem": Behaviour(debug_locks=debug_locks)}, lockdep=True)
    report, _ = kinds.race(_spec(schemes=("rwsem",)), stages=stages)
    (run,) = report.runs
    assert run.verdict is verdict
    assert run.guest.debug_locks_before is bool(debug_locks[0])
    problems = report.problems()
    assert (says is None and problems == []) or (len(problems) == 1 and says in problems[0])


def test_no_lockdep_kernel_reads_no_lockdep_stats():
    report, stages = _one(Behaviour(debug_locks=(0, 0)))
    assert report.runs[0].verdict is Verdict.CLEAN
    assert not any("lockdep_stats" in c for c in stages.guests[0][1].commands)


@pytest.mark.parametrize(
    "kasan, behaviour, control, fails",
    [
        (True, Behaviour(console=KASAN_UAF * 2), Control.FIRED, False),
        (True, Behaviour(), Control.MISSED, True),
        (False, Behaviour(), Control.NO_SHADOW, False),
    ],
)
def test_the_kasan_control_needs_the_shadow(kasan, behaviour, control, fails):
    stages = FakeStages({"unsafe-uaf": behaviour}, kasan=kasan)
    report, _ = kinds.race(_spec(schemes=("unsafe-uaf",)), stages=stages)
    (run,) = report.runs
    assert run.control is control
    assert bool(report.problems()) is fails
    if fails:
        assert "it reported no bad access" in report.problems()[0]
    if control is Control.FIRED:
        assert [s.kind for s in run.splats] == ["kasan", "kasan"]


def test_the_guest_state_survives_the_json_round_trip():
    from harness.race.outcomes import reports_from_json

    stages = FakeStages({"rwsem": Behaviour(boot_console=WARNING)}, lockdep=True, kasan=True)
    report, _ = kinds.race(_spec(schemes=("rwsem",)), stages=stages)
    (back,) = reports_from_json(json.loads(json.dumps(report.to_json())))
    assert back.lockdep and back.kasan
    assert back.runs[0].guest.boot_splats[0].title == report.runs[0].guest.boot_splats[0].title
    assert back.runs[0].guest.debug_locks_before is True
    assert back.problems() == report.problems()
