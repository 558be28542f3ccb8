"""Shared fixtures for the seed's claims (one test file per claim).

- `claim_guest(*schemes, providers=2, buses=1, knobs=..., config=None)` boots a
  guest with those schemes' modules and the racer (`/bin/racer`) and prepares
  it with `harness.race.engine.prepare_guest` (knobs in /etc/modprobe.d, the core and
  `P_prov0` loaded).  Several schemes can share a guest (prefixes differ).
- `racer(vm, role, ...)` runs one racer role with `--count`/`--duration-ms`
  and returns the parsed `RoleResult`; `race(...)` runs one RaceSpec workload
  through `harness.race.engine.run_one`; `run_roles(...)` runs hand-made roles
  together at a barrier.
- `scheme_for(claim, default)`: the scheme under test, swapped by the env var
  `CLAIMS_SCHEME_OVERRIDE` (`SCHEME` for every claim, or
  `claim1=rwsem-deferred,claim6=unsafe`) to show that a claim test fails when
  its claim is broken.  Off by default.
- `--matrix-out DIR`: at session end (in the xdist controller, or the only
  process) write DIR/matrix.json and DIR/matrix.md (harness/reports/matrix_page.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from claimlib import OVERRIDE_ENV, ClaimGuest, contention

from harness.guest.vm import VmConfig
from harness.race import kbuild
from harness.race.engine import DEFAULT_KNOBS, RaceSpec
from harness.race.schemerace import prepare_guest


@pytest.fixture
def claim_guest(kernel, kernel_spec, vm_factory):
    """Factory: a prepared guest with one or more schemes' modules (the racer
    is in every guest)."""

    def make(
        *schemes: str,
        providers: int = 2,
        buses: int = 1,
        knobs: kbuild.KnobsInput = DEFAULT_KNOBS,
        config: VmConfig | None = None,
    ) -> ClaimGuest:
        mods = {s: kbuild.build(kernel, kbuild.ModuleSetSpec(s, providers=providers, buses=buses)) for s in schemes}
        kos = tuple(ko for m in mods.values() for ko in m.ko_files)
        vm = vm_factory(modules=kos, config=config)
        spec = RaceSpec(
            kernel=kernel_spec.name, schemes=tuple(schemes), workloads=("lookup",), knobs=kbuild.Knobs(knobs)
        )
        for m in mods.values():
            prepare_guest(vm, m, spec)
        g = ClaimGuest(
            vm=vm,
            mods=mods,
            kernel_spec=kernel_spec.name,
            knobs=kbuild.Knobs(knobs),
            release=vm.image.kernel.release,
            factor=kernel.time_factor,
        )
        g.start = vm.console_size()
        return g

    return make


# ---------------------------------------------------------------- matrix output


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--matrix-out",
        default=None,
        metavar="DIR",
        help="write DIR/matrix.json and DIR/matrix.md (claim x kernel) at session end",
    )


_RECORDS: list[dict] = []


def _matrix_dir(config: pytest.Config) -> str | None:
    try:
        return config.getoption("--matrix-out")
    except ValueError:  # this conftest was not an initial one: option unknown
        return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In an xdist worker this also runs, harmlessly; the controller gets every
    # worker's reports (with user_properties) through this same hook.
    _RECORDS.append(
        {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "duration": report.duration,
            "user_properties": [list(p) for p in report.user_properties],
            "longrepr": str(report.longrepr)[-2000:] if report.failed else "",
        }
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = _matrix_dir(session.config)
    if not out or hasattr(session.config, "workerinput"):
        return
    from harness import kernels
    from harness.reports.matrix import build_matrix
    from harness.reports.matrix_page import write_matrix

    # The session's own kernels too: a local tree's name is its path.
    known = (*kernels.ROWS, *(s.name for s in getattr(session.config, "_harness_specs", ())))
    matrix = build_matrix(_RECORDS, known_kernels=known)
    write_matrix(matrix, Path(out))


@pytest.fixture(autouse=True)
def _claim_identity(request, kernel_spec, kernel, record_property):
    """Every claim test records its kernel (spec, exact release and Debian
    version, which the nightly page compares night to night) and scheme
    override, for the matrix."""
    record_property("kernel", kernel_spec.name)
    record_property("kernel_release", kernel.release)
    record_property("kernel_version", kernel.version)
    if request.node.get_closest_marker("fact"):
        record_property("kind", "fact")
    if os.environ.get(OVERRIDE_ENV):
        record_property("scheme_override", os.environ[OVERRIDE_ENV])
    if contention():
        record_property("contention", contention())
