"""Whether a run's callers reached the module at all: per caller role, the
calls that succeeded with every unloaded module live from start to end
(the racer's `ok_live`).  A role at 0 makes the run `unreached`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .racer import RoleResult, op_name


@dataclass(frozen=True)
class RoleReach:
    """Whether one caller role reached the module: its calls, and those that
    succeeded with the module live from start to end (`ok_live`; None: the
    racer's output did not say, an older report)."""

    label: str  # "caller1 socket", "caller2 socket (held)": the role, its number among the callers, its operation
    op: str
    calls: int
    ok_live: int | None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        return self.ok_live is None or self.ok_live > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.label,
            "op": self.op,
            "calls": self.calls,
            "ok_live": self.ok_live,
            "errors": dict(sorted(self.errors.items())),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RoleReach":
        live = d.get("ok_live")
        return cls(
            str(d["role"]),
            str(d["op"]),
            int(d["calls"]),
            None if live is None else int(live),
            {str(k): int(v) for k, v in (d.get("errors") or {}).items()},
        )


def role_reach(roles: Sequence[RoleResult]) -> tuple[RoleReach, ...]:
    """Each caller role's reach, numbered among the callers in start order;
    a role without a result is a role error, not a reach."""
    out: list[RoleReach] = []
    callers = [r for r in roles if r.role is not None and r.role.caller]
    for n, r in enumerate(callers, 1):
        # A generic caller's call is its first op (netdev-add before netdev-del).
        raw = (r.events.calls.op if r.events and r.events.calls else r.role.caller_op if r.role else None) or next(
            iter(r.ops), ""
        )
        st = r.ops.get(raw)
        if r.error or st is None:
            continue
        op = op_name(r.role, raw)
        held = " (held)" if r.hold_us else ""
        out.append(RoleReach(f"{r.role}{n} {op}{held}", op, st.total, st.ok_live, dict(st.errors)))
    return tuple(out)
