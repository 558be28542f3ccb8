"""Helpers for the loader tests (test_loader_*.py): the outcome of a racer
loader that made one load, and latency summaries in milliseconds."""

from __future__ import annotations

import re

from harness.race.kbuild import Knobs
from harness.race.racer import RoleResult, RoleSpec, percentile

SCHEME = "refcount"  # any scheme's provider is a plain module; this one's is the simplest
OK = "0"
# What each load path can report: raw finit_module returns an errno; kmod's
# modprobe only an exit status (the racer's pseudo-errno EMODPROBE).
DOCUMENTED = {"finit": frozenset({OK, "EEXIST", "EBUSY"}), "modprobe": frozenset({OK, "EMODPROBE"})}
LOAD_PATHS = tuple(DOCUMENTED)


def single_load(r: RoleResult) -> tuple[str, float]:
    """(outcome, latency in ms) of a loader role that ran `--count 1`:
    the outcome is "0" or the errno name; "none" if no load was counted."""
    st = r.ops.get("load")
    if st is None or st.total != 1:
        return "none", 0.0
    outcome = OK if st.ok == 1 else next(iter(st.errors), "none")
    return outcome, round(st.latency_us.get("max", 0.0) / 1000, 1)


def ms_summary(values: list[float]) -> dict[str, float]:
    """min/p50/max of latencies in ms (empty: {})."""
    if not values:
        return {}
    return {"min": min(values), "p50": percentile(values, 50), "max": max(values)}


def counts(outcomes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in sorted(outcomes):
        out[o] = out.get(o, 0) + 1
    return out


def finit_params(knobs: tuple[tuple[str, int], ...]) -> str:
    """The provider parameters for a raw finit_module (modprobe reads them
    from /etc/modprobe.d, written by prepare_guest)."""
    return " ".join(Knobs(knobs).args())


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a `uname -r` release: 6.12.118+deb13-amd64 -> (6, 12)."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise ValueError(f"not a kernel release: {release!r}")
    return int(m.group(1)), int(m.group(2))


# 6.5 made concurrent finit_module of one inode idempotent (the others get the
# first one's result).  Measured: EEXIST for the others on 5.10 and 6.1, 0 on
# 6.12 and 7.2.
IDEMPOTENT_FINIT_SINCE = (6, 5)


def idempotent_finit(release: str) -> bool:
    return kernel_version(release) >= IDEMPOTENT_FINIT_SINCE


def one_load(g, load: str, name: str, knobs: tuple[tuple[str, int], ...]) -> RoleSpec:
    """One load of provider `name` through `load`: finit_module of its .ko with
    the knobs as parameters, or kmod's modprobe (knobs from modprobe.d)."""
    return RoleSpec(
        "loader",
        name=name,
        load=load,
        count=1,
        duration_ms=20000,
        ko=g.ko(SCHEME) if load == "finit" else None,
        params=finit_params(knobs) if load == "finit" else None,
    )
