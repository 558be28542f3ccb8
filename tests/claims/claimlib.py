"""Helpers shared by the claim tests (imported as `claimlib`; conftest.py
holds the fixtures and the matrix hooks).  See conftest.py's docstring."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

from harness.guest.splat import new_splats
from harness.race import kbuild
from harness.race.engine import BARRIER, RaceSpec, RolesOutcome
from harness.race.engine import run_roles as race_roles
from harness.race.outcomes import RunResult, op_json
from harness.race.racer import RoleResult, RoleSpec, parse_role_output
from harness.race.schemerace import run_one

OVERRIDE_ENV = "CLAIMS_SCHEME_OVERRIDE"
CONTENTION_ENV = "CLAIMS_CONTENTION"  # host CPU hogs during the claims' races (race --contention)


def contention() -> int:
    raw = os.environ.get(CONTENTION_ENV, "0").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"{CONTENTION_ENV} must be a number of host CPU hogs, got {raw!r}")
    return int(raw)


# ---------------------------------------------------------------- scheme override


def scheme_for(claim: str, default: str) -> str:
    """The scheme a claim test runs against: `default` unless overridden."""
    raw = os.environ.get(OVERRIDE_ENV, "").strip()
    if not raw:
        return default
    if "=" not in raw:
        return raw
    for item in raw.split(","):
        key, _, val = item.partition("=")
        if key.strip() == claim and val.strip():
            return val.strip()
    return default


# ---------------------------------------------------------------- guests


@dataclass
class ClaimGuest:
    vm: object
    mods: dict[str, kbuild.BuiltModules]  # scheme -> modules
    kernel_spec: str
    knobs: kbuild.Knobs
    release: str
    start: int = 0  # console offset after prepare
    notes: list[str] = field(default_factory=list)
    # The kernel's slowdown (catalogue row): race durations and timeouts are
    # multiplied by it, so a debug kernel's races reach the same iterations.
    factor: float = 1.0

    def m(self, scheme: str) -> kbuild.BuiltModules:
        return self.mods[scheme]

    def ko(self, scheme: str, i: int = 0) -> str:
        name = self.mods[scheme].spec.provider_names[i]
        return f"/lib/modules/{self.release}/extra/{name}.ko"

    def sh(self, cmd: str, timeout: float = 60, check: bool = True):
        res = self.vm.ssh.run(cmd, timeout=timeout * self.factor)
        if check:
            assert res.exit_status == 0, (
                f"exit {res.exit_status}\n$ {cmd}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}"
            )
        return res

    def splats(self) -> list:
        return new_splats(self.vm.console_text(), self.start)


# ---------------------------------------------------------------- racer helpers


def racer(g: ClaimGuest, spec: RoleSpec, timeout: float = 120) -> RoleResult:
    """One racer role to completion; its JSON parsed."""
    spec = dataclasses.replace(spec, duration_ms=int(spec.duration_ms * g.factor))
    res = g.vm.ssh.run(spec.command(), timeout=timeout * g.factor)
    return parse_role_output(res.stdout, role=spec.role, exit_status=res.exit_status, stderr=res.stderr)


def op_dict(r: RoleResult, op: str) -> dict:
    """One operation's counts as recorded in the matrix (no histogram)."""
    st = r.ops.get(op)
    if st is None:
        return {"total": 0, "ok": 0, "errors": {}, "error": r.error}
    doc = op_json(st)
    doc.pop("hist")
    doc.pop("hist_failed", None)
    return doc


def race(
    g: ClaimGuest,
    scheme: str,
    workload: str,
    duration_s: float = 10,
    seed: int = 1,
    unload_pause_ms: int = 100,
    hogs: int | None = None,
) -> RunResult:
    """One RaceSpec workload (unloader vs callers) in the guest; host CPU
    contention from CLAIMS_CONTENTION unless given."""
    spec = RaceSpec(
        kernel=g.kernel_spec,
        schemes=(scheme,),
        workloads=(workload,),
        duration_s=duration_s * g.factor,
        seed=seed,
        knobs=g.knobs,
        unload_pause_ms=unload_pause_ms,
        contention=contention() if hogs is None else hogs,
    )
    return run_one(g.vm, g.mods[scheme], spec, scheme, workload, g.release)


def run_roles(g: ClaimGuest, roles: list[RoleSpec], duration_ms: int, slack_s: float = 45) -> RolesOutcome:
    """Hand-made roles started together at the barrier, each for duration_ms.
    A role still running `slack_s` after the deadline is a hang (RunEnd.HUNG)."""
    duration_ms = int(duration_ms * g.factor)
    timed = [dataclasses.replace(r, duration_ms=duration_ms, barrier=BARRIER, parties=len(roles)) for r in roles]
    return race_roles(g.vm, timed, duration_ms / 1000, slack_s=slack_s * g.factor)


def guest_uptime(g: ClaimGuest) -> float:
    """Seconds since the guest booted: the clock of its console's timestamps."""
    return float(g.sh("cat /proc/uptime").stdout.split()[0])


def printk_seconds(line: str) -> float | None:
    """The timestamp of a console line (`[   24.000000] ...`), if it has one."""
    m = re.match(r"\s*\[\s*(\d+\.\d+)\]", line)
    return float(m.group(1)) if m else None


def run_summary(run: RunResult) -> dict:
    """The JSON-able part of a RunResult worth recording (no histograms or console lines)."""
    doc = run.to_json()
    for op in doc["ops"].values():
        op.pop("hist")
    doc["splats"] = [f"{s['kind']}: {s['title']}" for s in doc["splats"]]
    return doc
