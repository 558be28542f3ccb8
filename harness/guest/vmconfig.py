"""What a guest boots with and how a boot can end: the settings record
(`VmConfig`, checked up front, before any process starts), the boot's
outcomes, the error a failed boot raises and the console tail it carries."""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import HarnessError
from .qemu import ACCELS


@dataclass(frozen=True)
class VmConfig:
    """How to boot: everything that changes the guest's behaviour is here."""

    accel: str = "auto"
    cpus: int = 2
    memory_mb: int = 1024
    boot_timeout_s: float = 60.0
    rcu_expedited: bool = False  # after boot; recorded in every report
    hung_task_timeout_s: int = 0  # 0 keeps the kernel's default
    cmdline_extra: tuple[str, ...] = ()
    cold_boot: bool = False  # never restore a snapshot (nor save one)

    def __post_init__(self) -> None:
        if self.accel not in ACCELS:
            raise HarnessError(f"unknown accel {self.accel!r}; valid: {', '.join(ACCELS)}")
        if self.cpus < 1 or self.memory_mb < 256:
            raise HarnessError("a guest needs at least 1 CPU and 256 MiB")


# What a guest's QEMU takes beside the guest's RAM: measured, a 1024 MiB TCG
# guest's QEMU at 1317 MiB RSS after five minutes of modprobes (its
# translation cache grows with use), rounded up.
QEMU_OVERHEAD_MB = 384


def _available_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    raise HarnessError("/proc/meminfo has no MemAvailable")


def check_parallel(
    n: int, memory_mb: int = VmConfig.memory_mb, available_mb: int | None = None, cores: int | None = None
) -> str | None:
    """`n` guests at once: refused in one line if their memory exceeds what
    the machine has available; a warning (returned) if they outnumber the cores."""
    need = n * (memory_mb + QEMU_OVERHEAD_MB)
    have = _available_mb() if available_mb is None else available_mb
    if need > have:
        fit = max(1, have // (memory_mb + QEMU_OVERHEAD_MB))
        raise HarnessError(
            f"{n} guests at once need {need} MiB ({memory_mb} MiB each and {QEMU_OVERHEAD_MB} MiB for its QEMU), "
            f"this machine has {have} MiB available; run at most {fit}"
        )
    cores = cores or os.cpu_count() or 1
    if n > cores:
        return f"{n} guests at once on {cores} cores: each gets less than a core, and races change their timing"
    return None


class BootOutcome(enum.Enum):
    """How a boot ended; the value is the reason a failed boot gives."""

    READY = "ready"
    WAITING = "waiting for its start line"
    START_FAILED = "the guest refused its start line (a bad line, or the reseed failed)"
    PANIC = "kernel panic"
    PORT_TAKEN = "the SSH forward's port was taken"
    QEMU_EXITED = "QEMU exited early"
    HUNG = "no ready marker within {timeout}s (hang?)"


class BootError(HarnessError):
    """The guest did not come up; carries the console tail and the log path."""

    def __init__(self, reason: str, log: Path, tail: str) -> None:
        super().__init__(f"{reason}; console log: {log}\n--- last console lines ---\n{tail}")
        self.log = log
        self.tail = tail


def whole_lines_tail(text: str, lines: int) -> str:
    """The last complete lines of a console log; a last line the guest had not
    finished when the log was read is kept but marked as cut."""
    text = text.replace("\r", "")
    body, sep, partial = text.rpartition("\n")
    tail = body.splitlines()[-lines:] if sep else []
    if partial.strip():
        tail = tail[-(lines - 1) :] if lines > 1 else []
        tail.append(partial + " [incomplete line]")
    return "\n".join(tail)
