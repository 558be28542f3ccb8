"""What a run leaves to take home, without QEMU: its replay (the setup's
commands and files, the racer command lines) and, with `dump`, the guest's
memory at the first splat."""

from __future__ import annotations

from fakeguest import OOPS, Behaviour, FakeGuest, FakeStages, fast_engine  # noqa: F401 (autouse)
from harness.errors import HarnessError
from harness.race import engine, kinds
from harness.race.outcomes import RaceReport


def _race(behaviours, workloads=("lookup",), dump=True):
    spec = engine.RaceSpec(schemes=tuple(behaviours), workloads=workloads, duration_s=0.2)
    stages = FakeStages(behaviours)
    report, _ = kinds.race(spec, stages=stages, dump=dump)
    return report, stages


def test_every_run_has_its_setup_and_role_command_lines_as_sent():
    report, stages = _race({"refcount": Behaviour()})
    ((_, guest),) = stages.guests
    (run,) = report.runs
    replay = run.replay
    assert replay is not None and replay.release == stages.release
    assert replay.files and replay.files[0][0] == "/etc/modprobe.d/harness.conf"
    assert replay.setup and all(c in guest.commands for c in replay.setup), "the setup as the guest got it"
    assert any("modprobe" in c for c in replay.setup)
    sent_roles = [c for c in guest.commands if "--barrier" in c]
    assert list(replay.roles) == sent_roles and len(sent_roles) >= 2
    assert replay.barrier == engine.BARRIER
    again = RaceReport.from_json(report.to_json()).runs[0]
    assert again.replay == replay, "a report read back can still be exported"


def test_the_memory_is_dumped_once_at_the_first_splat_beside_the_console_log():
    report, stages = _race({"refcount": Behaviour(console=OOPS)}, workloads=("lookup", "mount"))
    first, second = report.runs
    assert first.splats and first.dump is not None and first.dump.vmcore.endswith(".vmcore")
    assert first.dump.bytes > 0 and first.dump.vmlinux == "/nonexistent/vmlinux"
    assert second.dump is None, "one dump per race"
    dumped = [p for _, g in stages.guests for p in g.dumps]
    assert len(dumped) == 1 and str(dumped[0]) == first.dump.vmcore


def test_a_race_without_a_splat_is_dumped_after_its_last_run_and_only_when_asked():
    report, stages = _race({"refcount": Behaviour()}, workloads=("lookup", "mount"))
    assert [r.dump is not None for r in report.runs] == [False, True]
    report, stages = _race({"refcount": Behaviour(console=OOPS)}, dump=False)
    assert report.runs[0].dump is None and not stages.guests[0][1].dumps


def test_a_guest_that_died_leaves_a_note_not_a_dump():
    report, stages = _race({"refcount": Behaviour(console=OOPS, finish=False, die_after=0.05)})
    (run,) = report.runs
    assert run.dump is not None and run.dump.vmcore == "" and "died" in run.dump.note
    assert not stages.guests[0][1].dumps


def test_a_dump_that_fails_is_a_note_and_the_race_goes_on(monkeypatch):
    def full(self, path):
        raise HarnessError(f"no space left on the device writing {path}")

    monkeypatch.setattr(FakeGuest, "dump_memory", full)
    report, _ = _race({"refcount": Behaviour(console=OOPS)})
    (run,) = report.runs
    assert run.dump is not None and run.dump.vmcore == "" and "no space left" in run.dump.note
    assert run.verdict.value == "crashed"
