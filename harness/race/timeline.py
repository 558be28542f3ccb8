"""A run's events on one axis: the unloader's unload windows and each caller
op's failed calls and call rate, shifted from each role's own start onto the
earliest (the roles leave the barrier within microseconds of each other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .racer import CallEvents, CallFailure, RoleResult, UnloadWindow, op_name


@dataclass(frozen=True)
class Timeline:
    """A run's events on one axis: ms since the first role started (the roles
    leave the barrier within microseconds of each other)."""

    windows: tuple[UnloadWindow, ...] = ()  # the unloader's, the first 20 000
    windows_total: int = 0
    calls: dict[str, CallEvents] = field(default_factory=dict)  # by caller op (lookup, mount, fsmount)
    # The origin on the guest's CLOCK_MONOTONIC, seconds: what a console
    # line's printk time is read against (they differ by well under a ms).
    origin_s: float | None = None

    def at_ms(self, uptime_s: float) -> float | None:
        """A guest time (a console line's "[  29.820576]") on this axis."""
        return None if self.origin_s is None else round((uptime_s - self.origin_s) * 1000, 3)

    def unloads_before(self, ms: float) -> int:
        """Unloads completed before `ms` on this axis (of the windows kept)."""
        return sum(1 for w in self.windows if w.delete_error is None and w.deleted_ms < ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "time_origin": "the first role's start, ms",
            "origin_s": self.origin_s,
            "unloads": {
                "total": self.windows_total,
                "windows": [
                    [w.begin_ms, w.deleted_ms, w.reloaded_ms, w.delete_error, w.load_error, w.module]
                    for w in self.windows
                ],
            },
            "calls": {
                op: {
                    "failures_total": c.failures_total,
                    "failures": [[f.start_ms, f.end_ms, f.errno] for f in c.failures],
                    "bin_ms": c.bin_ms,
                    "done": list(c.done),
                    "ok": list(c.ok),
                }
                for op, c in sorted(self.calls.items())
            },
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any] | None) -> "Timeline | None":
        if not d:
            return None
        unloads = d.get("unloads") or {}
        windows = tuple(
            UnloadWindow(float(w[0]), float(w[1]), float(w[2]), w[3], w[4], str(w[5]) if len(w) > 5 else "")
            for w in unloads.get("windows", [])
        )
        origin = d.get("origin_s")
        calls = {
            str(op): CallEvents(
                op=str(op),
                failures_total=int(c["failures_total"]),
                failures=tuple(CallFailure(float(a), float(b), str(e)) for a, b, e in c["failures"]),
                bin_ms=int(c["bin_ms"]),
                done=tuple(c["done"]),
                ok=tuple(c["ok"]),
            )
            for op, c in (d.get("calls") or {}).items()
        }
        return cls(
            windows=windows,
            windows_total=int(unloads.get("total", len(windows))),
            calls=calls,
            origin_s=float(origin) if origin is not None else None,
        )


def _sum_bins(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    n = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(n))


def timeline(roles: Sequence[RoleResult]) -> Timeline | None:
    """The roles' events shifted onto the earliest start; None when no role
    reported any (an older racer, or every role died)."""
    with_events = [(r.role, r.name, r.events) for r in roles if r.events is not None]
    if not with_events:
        return None
    origin = min(ev.start_ns for _, _, ev in with_events)
    windows: list[UnloadWindow] = []
    total = 0
    calls: dict[str, CallEvents] = {}
    for role, module, ev in with_events:
        shift = (ev.start_ns - origin) / 1e6
        windows += [w.shifted(shift, module) for w in ev.windows]
        total += ev.windows_total
        if ev.calls is None:
            continue
        op = op_name(role, ev.calls.op)
        mine = CallEvents(
            op=op,
            failures=tuple(f.shifted(shift) for f in ev.calls.failures),
            failures_total=ev.calls.failures_total,
            bin_ms=ev.calls.bin_ms,
            done=ev.calls.done,
            ok=ev.calls.ok,
        )
        if op in calls:  # two roles of one op: their bins start within microseconds
            cur = calls[op]
            mine = CallEvents(
                op=op,
                failures=tuple(sorted(cur.failures + mine.failures, key=lambda f: f.end_ms)),
                failures_total=cur.failures_total + mine.failures_total,
                bin_ms=cur.bin_ms,
                done=_sum_bins(cur.done, mine.done),
                ok=_sum_bins(cur.ok, mine.ok),
            )
        calls[op] = mine
    return Timeline(
        windows=tuple(sorted(windows, key=lambda w: w.begin_ms)),
        windows_total=total,
        calls=dict(sorted(calls.items())),
        origin_s=origin / 1e9,
    )
