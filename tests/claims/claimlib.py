"""Helpers shared by the claim tests (imported as `claimlib`; conftest.py
holds the fixtures and the matrix hooks).  See conftest.py's docstring."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from harness import kbuild
from harness.race import BARRIER, RACER, RaceSpec, run_one
from harness.race import run_roles as race_roles
from harness.racer import RoleResult, parse_role_output
from harness.splat import new_splats

OVERRIDE_ENV = "CLAIMS_SCHEME_OVERRIDE"

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
    knobs: tuple[tuple[str, int], ...]
    release: str
    start: int = 0  # console offset after prepare
    notes: list[str] = field(default_factory=list)

    def m(self, scheme: str) -> kbuild.BuiltModules:
        return self.mods[scheme]

    def ko(self, scheme: str, i: int = 0) -> str:
        name = self.mods[scheme].spec.provider_names[i]
        return f"/lib/modules/{self.release}/extra/{name}.ko"

    def sh(self, cmd: str, timeout: float = 60, check: bool = True):
        res = self.vm.ssh.run(cmd, timeout=timeout)
        if check:
            assert res.exit_status == 0, (
                f"exit {res.exit_status}\n$ {cmd}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}")
        return res

    def splats(self) -> list:
        return new_splats(self.vm.console_text(), self.start)


# ---------------------------------------------------------------- racer helpers


def racer_argv(role: str, *args: str, count: int | None = None, duration_ms: int = 15000) -> str:
    argv = [RACER, role, *args, "--duration-ms", str(duration_ms)]
    if count is not None:
        argv += ["--count", str(count)]
    return " ".join(shlex.quote(a) for a in argv)


def racer(g: ClaimGuest, role: str, *args: str, count: int | None = None,
          duration_ms: int = 15000, timeout: float = 120) -> RoleResult:
    """One racer role to completion; its JSON parsed."""
    res = g.vm.ssh.run(racer_argv(role, *args, count=count, duration_ms=duration_ms), timeout=timeout)
    return parse_role_output(res.stdout, role=role, exit_status=res.exit_status, stderr=res.stderr)


def op_dict(r: RoleResult, op: str) -> dict:
    st = r.ops.get(op)
    if st is None:
        return {"total": 0, "ok": 0, "errors": {}, "error": r.error}
    return {"total": st.total, "ok": st.ok, "errors": dict(st.errors),
            "latency_us": dict(st.latency_us)}


def race(g: ClaimGuest, scheme: str, workload: str, duration_s: float = 10, seed: int = 1,
         unload_pause_ms: int = 100):
    """One RaceSpec workload (unloader vs callers) in the guest: RunResult."""
    spec = RaceSpec(kernel=g.kernel_spec, schemes=(scheme,), workloads=(workload,),
                    duration_s=duration_s, seed=seed, knobs=g.knobs,
                    unload_pause_ms=unload_pause_ms)
    return run_one(g.vm, g.mods[scheme], spec, scheme, workload)


def run_roles(g: ClaimGuest, argvs: list[list[str]], duration_ms: int,
              slack_s: float = 45) -> tuple[list[RoleResult], str, float]:
    """Hand-made roles started together at the barrier: (results, note, seconds).
    A role still running `slack_s` after the deadline is a hang (note says so)."""
    parties = len(argvs)
    full = [[RACER, *a, "--duration-ms", str(duration_ms), "--barrier", BARRIER,
             "--parties", str(parties)] for a in argvs]
    return race_roles(g.vm, full, duration_ms / 1000, slack_s=slack_s)


def run_summary(run) -> dict:
    """The JSON-able part of a RunResult worth recording."""
    return {"ops": run.ops, "latency_us": run.latency_us, "spurious": run.spurious_failures,
            "failed_during_unload": run.failed_during_unload, "verdict": run.verdict,
            "splats": [s["title"] for s in run.splats], "note": run.note,
            "role_errors": run.role_errors, "seconds": run.seconds}


