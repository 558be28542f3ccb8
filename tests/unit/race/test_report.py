"""Report maths: spurious failures, verdicts and the table, from role records."""

from harness.guest.snapshot import ColdReason, GuestStart, StartPath
from harness.guest.splat import Splat
from harness.race.kbuild import Knobs
from harness.race.outcomes import RaceReport, RunEnd, TargetInfo, Verdict, exit_status, summarise_run
from harness.race.racer import OpStats, RoleResult
from harness.reports.table import render_table

LAT = {"p50": 10.0, "p90": 20.0, "p99": 30.0, "max": 40.0}


def _unloader(ok=5, total=8):
    return RoleResult(
        "unloader",
        ops={"delete_module": OpStats(total, ok, {"EAGAIN": total - ok}, 0, LAT), "load": OpStats(ok, ok, {}, 0, LAT)},
    )


def test_spurious_counts_caller_failures_only():
    looker = RoleResult("looker", ops={"lookup": OpStats(100, 90, {"ENODEV": 7, "ENOENT": 3}, 6, LAT, 2500.0)})
    fsm = RoleResult(
        "fsmounter",
        ops={"mount": OpStats(20, 18, {"ENODEV": 2}, 2, LAT, 1200.0), "umount": OpStats(18, 17, {"EBUSY": 1}, 0, LAT)},
    )
    run = summarise_run("refcount", "all", [_unloader(), looker, fsm], [], RunEnd.COMPLETED, "", "repro", 1.0)
    assert set(run.ops) == {"delete_module", "load", "lookup", "fsmount", "fsumount"}
    assert run.spurious_failures == 12  # 10 lookups + 2 fsmounts; umount and rmmod do not count
    assert run.failed_during_unload == 8
    assert run.first_spurious_s == 1.2
    assert run.verdict is Verdict.SPURIOUS


def _run(scheme, roles, splats=(), end=RunEnd.COMPLETED):
    return summarise_run(scheme, "lookup", roles, list(splats), end, "", "", 1)


def test_verdicts():
    clean = RoleResult("looker", ops={"lookup": OpStats(5, 5, {}, 0, LAT)})
    assert _run("rwsem", [_unloader(), clean]).verdict is Verdict.CLEAN
    assert _run("rwsem", [_unloader(0, 8), clean]).verdict is Verdict.NO_RACE
    oops = Splat("bug", "BUG: kernel NULL pointer dereference in un_prov0_call", ("x",), (), None, 0)
    crashed = _run("unsafe", [_unloader(), RoleResult.failed("looker", "killed")], [oops])
    assert crashed.verdict is Verdict.CRASHED and crashed.splats == [oops]
    warn = Splat("warning", "WARNING in foo", ("x",), (), None, 0)
    assert _run("rwsem", [_unloader(), clean], [warn]).verdict is Verdict.WARNED
    assert _run("rwsem", [_unloader(), clean], end=RunEnd.HUNG).verdict is Verdict.HUNG
    assert _run("rwsem", [_unloader(), clean], end=RunEnd.GUEST_DIED).verdict is Verdict.CRASHED


def test_sanitizer_reports_crash_or_warn_as_their_rows_say():
    clean = RoleResult("looker", ops={"lookup": OpStats(5, 5, {}, 0, LAT)})
    verdicts = {
        kind: _run("rwsem", [_unloader(), clean], [Splat(kind, "x", ("x",), (), None, 0)]).verdict
        for kind in ("kasan", "kfence", "kmsan", "kcsan", "ubsan", "lockdep", "hung_task")
    }
    assert verdicts == {
        "kasan": Verdict.CRASHED,
        "kfence": Verdict.CRASHED,
        "kmsan": Verdict.CRASHED,
        "kcsan": Verdict.WARNED,
        "ubsan": Verdict.WARNED,
        "lockdep": Verdict.WARNED,
        "hung_task": Verdict.WARNED,
    }


def test_only_safe_schemes_fail_on_a_splat_and_table_renders():
    oops = Splat("oops", "Oops in x", ("x",), (), None, 0)
    rep = RaceReport("6.1.0-56-amd64", "6.1", "tcg", 7, 10.0, False, Knobs({"exit_delay_ms": 200}), "finit")
    rep.runs.append(_run("unsafe", [_unloader()], [oops]))
    assert rep.problems() == [] and exit_status([rep]) == 0
    rep.runs.append(_run("refcount", [_unloader()], [oops]))
    assert rep.problems() == ["refcount/lookup: crashed (Oops in x)"] and exit_status([rep]) == 1
    table = render_table(rep)
    assert "seed 7" in table and "exit_delay_ms=200" in table
    assert table.count("crashed") == 2 and "Oops in x" in table


def test_failures_by_unloads_met_are_summed_over_callers():
    look = RoleResult("looker", ops={"lookup": OpStats(10, 7, {"ENOENT": 3}, 3, LAT, failed_by_unloads_met=(0, 1, 2))})
    mnt = RoleResult("mounter", ops={"mount": OpStats(5, 4, {"ENOENT": 1}, 1, LAT, failed_by_unloads_met=(0, 0, 1))})
    run = _run("rwsem-deferred", [_unloader(), look, mnt])
    assert run.failed_by_unloads_met == (0, 1, 3)
    assert run.to_json()["failed_by_unloads_met"] == [0, 1, 3]
    rep = RaceReport("6.1.0-57-amd64", "6.1", "tcg", 7, 10.0, False, Knobs(), "finit", runs=[run])
    lines = render_table(rep).splitlines()
    header = next(ln for ln in lines if ln.startswith("scheme"))
    row = next(ln for ln in lines if ln.startswith("rwsem-deferred"))
    at = header.index("met 1/2+ unloads")
    assert row[at:].split()[0] == "1/3", row


def test_the_header_says_how_the_guests_started():
    clean = RoleResult("looker", ops={"lookup": OpStats(5, 5, {}, 0, LAT)})
    a, b = _run("refcount", [_unloader(), clean]), _run("rwsem", [_unloader(), clean])
    rep = RaceReport("6.1.0-57-amd64", "6.1", "tcg", 7, 10.0, False, Knobs(), "finit", runs=[a, b])
    assert "guests" not in render_table(rep).splitlines()[0]  # not recorded: nothing claimed
    a.guest_start = b.guest_start = GuestStart(StartPath.RESTORED, snapshot="k1")
    assert render_table(rep).splitlines()[0].endswith(", guests restored")
    b.guest_start = GuestStart(StartPath.COLD, ColdReason.FAILED, "no state file")
    assert render_table(rep).splitlines()[0].endswith(", guests refcount/lookup:restored rwsem/lookup:cold")
    assert rep.to_json()["runs"][1]["guest_start"] == {
        "path": "cold",
        "reason": "failed",
        "detail": "no state file",
        "snapshot": "",
        "saved": False,
    }
    assert rep.to_json()["runs"][0]["guest_start"]["path"] == "restored"


def _caller(total, ok, live, errors=None, op="socket"):
    return RoleResult("caller", ops={op: OpStats(total, ok, errors or {}, 0, LAT, ok_live=live)})


def test_a_race_whose_callers_never_reached_the_module_is_unreached_and_fails():
    target = TargetInfo("twofish_generic", ("socket",))
    never = _caller(51, 0, 0, {"EAFNOSUPPORT": 51})
    run = summarise_run(
        "twofish_generic", "socket", [_unloader(), never], [], RunEnd.COMPLETED, "", "", 1, target=target
    )
    assert run.verdict is Verdict.UNREACHED
    assert [(r.label, r.calls, r.ok_live) for r in run.reach] == [("caller1 socket", 51, 0)]
    assert run.to_json()["reach"] == [
        {"role": "caller1 socket", "op": "socket", "calls": 51, "ok_live": 0, "errors": {"EAFNOSUPPORT": 51}}
    ]
    rep = RaceReport("6.1.0-57-amd64", "6.1", "tcg", 7, 10.0, False, Knobs(), "modprobe", runs=[run])
    assert rep.problems() == [
        "twofish_generic/socket: unreached (caller1 socket: no call succeeded while the "
        "module was loaded (EAFNOSUPPORT:51))"
    ]
    assert exit_status([rep]) == 1
    assert "caller1 socket never reached the module: 0 of 51 calls" in render_table(rep)
    assert RaceReport.from_json(rep.to_json()).runs[0].reach == run.reach


def test_calls_that_succeed_only_while_the_module_is_gone_do_not_reach_it():
    target = TargetInfo("x", ("open",))
    gone_only = _caller(40, 20, 0, {"ENOENT": 20}, op="open")
    live = _caller(40, 20, 3, {"ENOENT": 20}, op="open")
    assert (
        summarise_run(
            "x", "open", [_unloader(), gone_only, live], [], RunEnd.COMPLETED, "", "", 1, target=target
        ).verdict
        is Verdict.UNREACHED
    )
    assert (
        summarise_run("x", "open", [_unloader(), live, live], [], RunEnd.COMPLETED, "", "", 1, target=target).verdict
        is Verdict.CLEAN
    )


def test_an_older_report_without_ok_live_is_not_called_unreached():
    run = _run("rwsem", [_unloader(), RoleResult("looker", ops={"lookup": OpStats(5, 5, {}, 0, LAT)})])
    assert run.reach[0].ok_live is None and run.verdict is Verdict.CLEAN
    rep = RaceReport("6.1.0-57-amd64", "6.1", "tcg", 7, 10.0, False, Knobs(), "finit", runs=[run])
    row = next(ln for ln in render_table(rep).splitlines() if ln.startswith("rwsem"))
    assert " ? " in row
