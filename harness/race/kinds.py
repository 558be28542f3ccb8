"""The kinds of race, one row each, and `race()`: a settings record run by
its kind's strategy through the one engine."""

from __future__ import annotations

from typing import Callable, Mapping

from .engine import RaceGuest, RaceStages, Strategy, run_race
from .outcomes import RaceReport
from .schemerace import SchemeRace
from .spec import RaceSpec
from .targetrace import TargetRace

KINDS: Mapping[str, Callable[[RaceSpec], Strategy]] = {
    "scheme": SchemeRace,  # the seed's schemes x workloads, the harness's own modules
    "target": TargetRace,  # any module's unload against generic callers
}


def race(
    spec: RaceSpec, keep: bool = False, stages: RaceStages | None = None, dump: bool = False
) -> tuple[RaceReport, RaceGuest | None]:
    """Run `spec`; with `keep` the last guest is returned still running (the
    caller must kill it); with `dump` a run's guest memory is written (run_race)."""
    return run_race(spec, KINDS[spec.kind](spec), keep, stages, dump)
