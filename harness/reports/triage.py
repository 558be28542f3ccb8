"""What a survey's splat is: one row per splat already looked at, matched by
the target raced and the splat's title, saying whether it is a bug known and
fixed upstream (with the fix), a problem of the harness or its guest (with
what fixed it), the harness's own control, or a bug not yet known (with where
its reproducer is kept).  A splat no row matches is "not yet triaged": the
survey says so, and whoever looks at it adds the row here.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Sequence


class Triage(enum.Enum):
    KNOWN = "known, fixed upstream"
    HARNESS = "a harness or guest problem, fixed"
    CONTROL = "the harness's own control, meant to crash"
    NEW = "not yet known upstream"


@dataclass(frozen=True)
class TriageRow:
    kind: Triage
    target: str  # the module raced (a regular expression, whole name)
    title: str  # a regular expression searched in the splat's title
    note: str  # the fix's title and commit, what fixed the harness, or where the reproducer is

    def matches(self, target: str, title: str) -> bool:
        return re.fullmatch(self.target, target) is not None and re.search(self.title, title) is not None

    def line(self) -> str:
        return f"{self.kind.value}: {self.note}"


ROWS: tuple[TriageRow, ...] = (
    TriageRow(
        Triage.CONTROL,
        r"harness_noowner|noowner",
        r".",
        "a misc device whose file_operations lack .owner, read while it unloads (docs/targets.md)",
    ),
    TriageRow(
        Triage.CONTROL,
        r"harness_leaky|leaky",
        r"out of memory|oom-killer",
        "tests/project/leaky leaks a megabyte per read until the OOM killer runs",
    ),
    TriageRow(
        Triage.NEW,
        r"netdevsim",
        r"refcount_t: (addition on 0|underflow)",
        "nsim_bus_exit() clears nsim_bus_enable and drops the bus refcount outside nsim_bus_dev_list_lock "
        "(Debian 6.12.118), while new_device_store() checks nsim_bus_enable and then refcount_inc()s under it; "
        'the count came with "netdevsim: Block until all devices are released" (Ido Schimmel, netdev, '
        "2023-10-17); reproducer: bench/bugs, the netdevsim case's unpatched race "
        "(docs/benchmarks.md#bug-benchmark); mainline's current code not checked",
    ),
)


def triage(target: str, title: str, rows: Sequence[TriageRow] = ROWS) -> TriageRow | None:
    """The first row that matches, or None (not yet triaged)."""
    return next((r for r in rows if r.matches(target, title)), None)


def line(target: str, title: str) -> str:
    row = triage(target, title)
    return row.line() if row else "not yet triaged (add a row to harness/reports/triage.py)"
