"""A fake guest for the race engine: racer roles that complete, a guest that
dies, hangs, drops SSH or splats, with no QEMU.  Scripted per scheme by a
`Behaviour`; everything the engine sends is recorded for the tests to check."""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.guest.splat import parse
from harness.guest.ssh import CommandResult
from harness.race import engine as race
from harness.race.kbuild import BuiltModules, ModuleSetSpec

RELEASE = "6.1.0-99-fake"
OOPS = (
    "[   12.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    "[   12.000001] RIP: 0010:un_prov0_call+0x10/0x30 [un_prov0]\n"
    "[   12.000002] ---[ end trace 0000000000000000 ]---\n"
)
WARNING = (
    "[   12.000000] WARNING: CPU: 0 PID: 1 at drivers/fake/fake.c:42 fake_probe+0x10/0x20 [fake]\n"
    "[   12.000001] ---[ end trace 0000000000000000 ]---\n"
)


@dataclass
class Behaviour:
    """What the fake guest does once the roles start (times in seconds)."""

    role_s: float = 0.05  # roles finish after this long...
    finish: bool = True  # ...or never (a hang, or a death before they finish)
    die_after: float | None = None  # QEMU exits
    ssh_lost_after: float | None = None  # the connection drops, QEMU stays
    console: str = ""  # appended to the console when the roles start
    unloads: int = 5  # delete_module successes the unloader reports
    lookups: tuple[int, int] = (100, 100)  # (total, ok) per caller role
    live: int | None = None  # of the ok calls, those with the module live (None: all of them)
    errno: str = "ENODEV"  # what the failed calls returned
    killed_roles: tuple[str, ...] = ()  # roles that print no JSON (killed by an oops)
    boot_console: str = ""  # what the guest's boot printed (a boot splat)
    debug_locks: tuple[int, int] = (1, 1)  # /proc/lockdep_stats' debug_locks before and after the roles
    failing: tuple[str, ...] = ()  # commands (ssh.run) that exit 1


def role_json(role: str, b: Behaviour, op: str = "") -> str:
    total, ok = b.lookups
    lat = {"p50": 10.0, "p90": 20.0, "p99": 30.0, "max": 40.0}
    caller = {
        "total": total,
        "ok": ok,
        "ok_live": ok if b.live is None else b.live,
        "errors": {b.errno: total - ok} if total > ok else {},
        "failed_during_unload": total - ok,
        "latency_us": lat,
        "first_failure_ms": 12.5 if total > ok else None,
    }
    ops = {
        "unloader": {
            "delete_module": {"total": b.unloads + 3, "ok": b.unloads, "errors": {"EAGAIN": 3}, "latency_us": lat},
            "load": {"total": b.unloads, "ok": b.unloads, "errors": {}, "latency_us": lat},
        },
        "looker": {"lookup": caller},
        "mounter": {"mount": caller, "umount": {"total": ok, "ok": ok, "errors": {}, "latency_us": lat}},
        "fsmounter": {"mount": caller, "umount": {"total": ok, "ok": ok, "errors": {}, "latency_us": lat}},
        "caller": {op: caller},
    }[role]
    return json.dumps({"role": role, "name": "x_prov0", "duration_ms": 1000, "iterations": 10, "ops": ops})


class FakeRunning:
    def __init__(self, guest: "FakeGuest", command: str, on_stderr) -> None:
        self.guest = guest
        self.command = command
        argv = shlex.split(command)
        self.argv = argv
        self.role = argv[1] if len(argv) > 1 and argv[0].endswith("racer") else ""
        self.t0 = time.monotonic()
        if on_stderr:
            on_stderr(b"progress 7\n")

    def _finished(self) -> bool:
        b = self.guest.behaviour
        if not self.role:
            return True
        if not self.guest.alive() or not self.guest.ssh.alive():
            return False  # a dead connection's channels may never report
        return b.finish and time.monotonic() - self.t0 >= b.role_s

    def done(self) -> bool:
        return self._finished()

    def wait(self, timeout: float | None = None) -> CommandResult:
        end = time.monotonic() + (timeout or 0)
        while not self._finished() and time.monotonic() < end:
            time.sleep(0.01)
        if not self._finished():
            return CommandResult(self.command, -1, "", "", 0.0)
        if self.role in self.guest.behaviour.killed_roles:
            return CommandResult(self.command, -1, "", "", 0.0)
        op = self.argv[self.argv.index("--op") + 1] if "--op" in self.argv else ""
        out = role_json(self.role, self.guest.behaviour, op) + "\n" if self.role else ""
        return CommandResult(self.command, 0, out, "", 0.0)


class FakeSsh:
    def __init__(self, guest: "FakeGuest") -> None:
        self.guest = guest

    def alive(self) -> bool:
        after = self.guest.behaviour.ssh_lost_after
        return self.guest.alive() and not self.guest._past(after)

    def run(
        self, command: str, timeout: float | None = 300, check: bool = False, stdin: bytes | None = None
    ) -> CommandResult:
        self.guest.commands.append(command)
        if command == "cat /proc/lockdep_stats":
            when = 0 if self.guest.started is None else 1
            return CommandResult(
                command,
                0,
                f" lock-classes: 12 [max: 8192]\n debug_locks: {self.guest.behaviour.debug_locks[when]}\n",
                "",
                0.0,
            )
        if command in self.guest.behaviour.failing:
            return CommandResult(command, 1, "", f"{command}: failed (fake)\n", 0.0)
        return CommandResult(command, 0, "", "", 0.0)

    def start(self, command: str, stdin=None, pty=False, on_stdout=None, on_stderr=None) -> FakeRunning:
        self.guest.commands.append(command)
        if self.guest.started is None:
            self.guest.started = time.monotonic()
            self.guest.console += self.guest.behaviour.console
        return FakeRunning(self.guest, command, on_stderr)

    def upload(self, local, remote: str, mode: int = 0o644) -> None:
        self.guest.uploads[remote] = local if isinstance(local, bytes) else Path(local).read_bytes()


@dataclass
class FakeGuest:
    behaviour: Behaviour = field(default_factory=Behaviour)
    accel: str = "tcg"
    port: int = 2222
    log_path: Path = Path("/nonexistent/fake-console.log")
    console: str = "[    0.000000] Linux version 6.1.0-99-fake\n"
    commands: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    started: float | None = None
    killed: bool = False
    dumps: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._ssh = FakeSsh(self)
        self.console += self.behaviour.boot_console
        self.boot_splats = tuple(parse(self.behaviour.boot_console))

    def _past(self, after: float | None) -> bool:
        return after is not None and self.started is not None and time.monotonic() - self.started >= after

    @property
    def ssh(self) -> FakeSsh:
        return self._ssh

    def alive(self) -> bool:
        return not self.killed and not self._past(self.behaviour.die_after)

    def kill(self) -> None:
        self.killed = True

    def console_text(self) -> str:
        return self.console

    def console_size(self) -> int:
        return len(self.console.encode())

    def dump_memory(self, path: Path) -> int:
        """A stand-in vmcore: an ELF magic and the console so far."""
        if not self.alive():
            raise AssertionError("the engine dumped a dead guest")
        data = b"\x7fELF" + self.console.encode()
        path.write_bytes(data)
        self.dumps.append(path)
        return len(data)


class FakeStages:
    """`race()`'s stages with fake guests: one `Behaviour` per scheme."""

    release = RELEASE
    describe = ""

    def __init__(self, behaviours: dict[str, Behaviour], lockdep: bool = False, kasan: bool = False) -> None:
        self.behaviours = behaviours
        self.lockdep = lockdep
        self.kasan = kasan
        self.guests: list[tuple[str, FakeGuest]] = []

    def modules(self, scheme: str) -> BuiltModules:
        spec = ModuleSetSpec(scheme)
        return BuiltModules(
            spec=spec,
            release=RELEASE,
            ko_files=[],
            core=spec.core,
            providers=spec.provider_names,
            prefix=spec.prefix,
            build_dir=Path("/nonexistent"),
        )

    def kernel_files(self) -> None:
        return None  # a target race's resolve is faked where one runs

    def guest_modules(self, payload) -> tuple[Path, ...]:
        return tuple(payload.ko_files)

    def debug_vmlinux(self) -> tuple[str, str]:
        return "/nonexistent/vmlinux", ""

    def symbolize(self, splats, modules) -> tuple[list, str]:
        return list(splats), "a fake kernel has no debug info"

    def boot(self, name: str, payload) -> FakeGuest:
        scheme = name.removeprefix("race-")
        guest = FakeGuest(behaviour=self.behaviours.get(scheme, Behaviour()))
        self.guests.append((scheme, guest))
        return guest


@pytest.fixture(autouse=True)
def fast_engine(monkeypatch, tmp_path):
    """Engine timings for a fake guest (imported by the engine tests: autouse there)."""
    monkeypatch.setattr(race, "HANG_SLACK_S", 0.5)
    monkeypatch.setattr(race, "CONSOLE_SETTLE_S", 0.0)
    monkeypatch.setattr(race, "POLL_S", 0.01)
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
