"""The guest-side racer: its static build, and its JSON turned into dataclasses.

The C source is `kmods/racer/racer.c`; one process runs one role and prints
one JSON object.  Percentiles are exact per role (the racer sorts its
samples); merging roles that share an operation keeps the worst of each.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import HarnessError
from .paths import REPO, cache_dir
from .progress import progress
from .util import file_lock, hash_inputs, need_tool

SOURCE = REPO / "kmods" / "racer" / "racer.c"
PERCENTILES = ("p50", "p90", "p99", "max")


@dataclass(frozen=True)
class OpStats:
    total: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    failed_during_unload: int = 0
    latency_us: dict[str, float] = field(default_factory=dict)
    first_failure_ms: float | None = None  # since the barrier

    @property
    def failed(self) -> int:
        return self.total - self.ok


@dataclass(frozen=True)
class RoleResult:
    role: str
    name: str = ""
    duration_ms: int = 0
    iterations: int = 0
    ops: dict[str, OpStats] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def failed(cls, role: str, error: str) -> "RoleResult":
        return cls(role=role, error=error)


def build_racer() -> Path:
    """Compile the racer statically, once per source and compiler."""
    gcc = need_tool("gcc", "gcc")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    out = cache_dir() / "racer" / hash_inputs(SOURCE, version) / "racer"
    with file_lock(out.parent / ".lock"):
        if not out.exists():
            progress("racer: building (static)")
            proc = subprocess.run([gcc, "-O2", "-static", "-Wall", "-Wextra", "-o", str(out) + ".tmp",
                                   str(SOURCE)], capture_output=True, text=True)
            if proc.returncode != 0 or "warning:" in proc.stderr:
                raise HarnessError(f"racer build failed:\n{proc.stderr.strip()}")
            Path(str(out) + ".tmp").rename(out)
    return out


def _op(d: dict) -> OpStats:
    return OpStats(total=int(d.get("total", 0)), ok=int(d.get("ok", 0)),
                   errors={str(k): int(v) for k, v in d.get("errors", {}).items()},
                   failed_during_unload=int(d.get("failed_during_unload", 0)),
                   latency_us={k: float(d.get("latency_us", {}).get(k, 0.0)) for k in PERCENTILES},
                   first_failure_ms=d.get("first_failure_ms"))


def parse_role_output(text: str, role: str = "?", exit_status: int = 0, stderr: str = "") -> RoleResult:
    """The last JSON object the role printed; a role that printed none (it was
    killed, or the guest died) gives a RoleResult with `error` set."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        return RoleResult(role=doc.get("role", role), name=doc.get("name", ""),
                          duration_ms=int(doc.get("duration_ms", 0)),
                          iterations=int(doc.get("iterations", 0)),
                          ops={k: _op(v) for k, v in doc.get("ops", {}).items()},
                          error=doc.get("error"))
    why = f"exit status {exit_status}" if exit_status >= 0 else "killed (oops or guest death)"
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("progress ")]
    detail = lines[-1] if lines else ""
    return RoleResult.failed(role, f"no result ({why}){': ' + detail if detail else ''}")


def merge_ops(per_role: Iterable[dict[str, OpStats]]) -> dict[str, OpStats]:
    """Sum counts per operation across roles; latency keeps the worst value."""
    merged: dict[str, OpStats] = {}
    for ops in per_role:
        for name, st in ops.items():
            cur = merged.get(name)
            if cur is None:
                merged[name] = st
                continue
            errors = dict(cur.errors)
            for k, v in st.errors.items():
                errors[k] = errors.get(k, 0) + v
            merged[name] = OpStats(
                total=cur.total + st.total, ok=cur.ok + st.ok, errors=errors,
                failed_during_unload=cur.failed_during_unload + st.failed_during_unload,
                latency_us={k: max(cur.latency_us.get(k, 0.0), st.latency_us.get(k, 0.0))
                            for k in PERCENTILES},
                first_failure_ms=min((f for f in (cur.first_failure_ms, st.first_failure_ms)
                                      if f is not None), default=None))
    return merged
