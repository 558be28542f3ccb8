"""Vm.boot without QEMU: a guest that prints nothing is booted once more,
a guest that hangs after printing, or twice in silence, is a boot error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.guest import vm as vm_mod
from harness.guest.vm import BootError, BootOutcome, Vm, VmConfig


@pytest.fixture
def fake_boot(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    monkeypatch.setattr(vm_mod, "damage_of_kernel", lambda k: None)
    monkeypatch.setattr(vm_mod, "choose_accel", lambda requested, k: "tcg")
    lines: list[str] = []
    monkeypatch.setattr(vm_mod, "progress", lines.append)
    kernel = SimpleNamespace(name="6.1", label="6.1", release="6.1.0-1-amd64", time_factor=1.0, cmdline=())
    image = SimpleNamespace(kernel=kernel, damage=lambda: None, payload=None)

    def make(script: list[tuple[BootOutcome, str]]) -> tuple[Vm, list[str], list[int]]:
        guest = Vm(image, VmConfig(cold_boot=True))  # type: ignore[arg-type]
        spawns: list[int] = []
        steps = iter(script)

        def spawn(extra: object = None, note: str = "") -> None:
            spawns.append(1)
            with open(guest.log_path, "a") as log:
                log.write("# qemu-system-x86_64 ...\n")

        def wait_ready() -> BootOutcome:
            outcome, console = next(steps)
            with open(guest.log_path, "a") as log:
                log.write(console)
            return outcome

        monkeypatch.setattr(guest, "_spawn", spawn)
        monkeypatch.setattr(guest, "_wait_boot", wait_ready)
        monkeypatch.setattr(guest, "_send_start", lambda timeout: BootOutcome.READY)
        monkeypatch.setattr(guest, "_start_pump", lambda: None)
        monkeypatch.setattr(guest, "kill", lambda: None)
        return guest, lines, spawns

    return make


def test_a_silent_hang_is_booted_once_more(fake_boot):
    guest, lines, spawns = fake_boot([(BootOutcome.HUNG, ""), (BootOutcome.WAITING, "HARNESS-GUEST-WAITING\n")])
    guest.boot()
    assert len(spawns) == 2
    assert any("printed nothing" in ln for ln in lines)


def test_two_silent_hangs_fail(fake_boot):
    guest, _, spawns = fake_boot([(BootOutcome.HUNG, ""), (BootOutcome.HUNG, "")])
    with pytest.raises(BootError, match="no ready marker within 60s"):
        guest.boot()
    assert len(spawns) == 2


@pytest.mark.parametrize(
    "outcome, console",
    [
        (BootOutcome.HUNG, "[    1.0] Run /init as init process\n[    2.0] something stuck\n"),
        (BootOutcome.PANIC, "Kernel panic - not syncing: VFS\n"),
    ],
)
def test_a_hang_after_output_or_a_panic_is_not_retried(fake_boot, outcome, console):
    guest, _, spawns = fake_boot([(outcome, console), (BootOutcome.WAITING, "")])
    with pytest.raises(BootError):
        guest.boot()
    assert len(spawns) == 1
