"""Report maths: spurious failures, verdicts and the table, from role records."""

from harness.racer import OpStats, RoleResult
from harness.report import RaceReport, render_table, summarise_run
from harness.splat import Splat

LAT = {"p50": 10.0, "p90": 20.0, "p99": 30.0, "max": 40.0}


def _unloader(ok=5, total=8):
    return RoleResult("unloader", ops={"delete_module": OpStats(total, ok, {"EAGAIN": total - ok}, 0, LAT),
                                       "load": OpStats(ok, ok, {}, 0, LAT)})


def test_spurious_counts_caller_failures_only():
    looker = RoleResult("looker", ops={"lookup": OpStats(100, 90, {"ENODEV": 7, "ENOENT": 3}, 6, LAT, 2500.0)})
    fsm = RoleResult("fsmounter", ops={"mount": OpStats(20, 18, {"ENODEV": 2}, 2, LAT, 1200.0),
                                       "umount": OpStats(18, 17, {"EBUSY": 1}, 0, LAT)})
    run = summarise_run("refcount", "all", [_unloader(), looker, fsm], [], "", "repro", 1.0)
    assert set(run.ops) == {"delete_module", "load", "lookup", "fsmount", "fsumount"}
    assert run.spurious_failures == 12  # 10 lookups + 2 fsmounts; umount and rmmod do not count
    assert run.failed_during_unload == 8
    assert run.first_spurious_s == 1.2
    assert run.verdict == "spurious"


def test_verdicts():
    clean = RoleResult("looker", ops={"lookup": OpStats(5, 5, {}, 0, LAT)})
    assert summarise_run("rwsem", "lookup", [_unloader(), clean], [], "", "", 1).verdict == "clean"
    assert summarise_run("rwsem", "lookup", [_unloader(0, 8), clean], [], "", "", 1).verdict == "no-race"
    oops = Splat("bug", "BUG: kernel NULL pointer dereference in un_prov0_call", ("x",), (), None, 0)
    crashed = summarise_run("unsafe", "lookup", [_unloader(), RoleResult.failed("looker", "killed")],
                            [oops], "", "", 1)
    assert crashed.verdict == "crashed" and crashed.splats == [{"kind": "bug", "title": oops.title}]
    warn = Splat("warning", "WARNING in foo", ("x",), (), None, 0)
    assert summarise_run("rwsem", "lookup", [_unloader(), clean], [warn], "", "", 1).verdict == "warned"
    assert summarise_run("rwsem", "lookup", [_unloader(), clean], [], "roles still running: hang", "",
                         1).verdict == "hung"


def test_only_safe_schemes_make_splats_unexpected_and_table_renders():
    oops = Splat("oops", "Oops in x", ("x",), (), None, 0)
    rep = RaceReport("6.1.0-56-amd64", "6.1", "tcg", 7, 10.0, False, {"exit_delay_ms": 200}, "finit")
    rep.runs.append(summarise_run("unsafe", "lookup", [_unloader()], [oops], "", "", 1))
    assert rep.unexpected_splats() == []
    rep.runs.append(summarise_run("refcount", "lookup", [_unloader()], [oops], "", "", 1))
    assert [r.scheme for r in rep.unexpected_splats()] == ["refcount"]
    table = render_table(rep)
    assert "seed 7" in table and "exit_delay_ms=200" in table
    assert table.count("crashed") == 2 and "Oops in x" in table
