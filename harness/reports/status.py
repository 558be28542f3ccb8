"""The harness's outcomes in the kernel CI's words: the one status table.

KCIDB's test statuses (highest priority first): FAIL (the tested code is
faulty), ERROR (the test did not complete; the code's state is unknown),
MISS (the harness failed to run it), PASS, DONE, SKIP.  A race run is keyed by
`outcome(run)`: "passed" when `problem(run)` is None (whatever its verdict: a
negative control that crashed as it must passes), else a missed control, else
its verdict.  A pytest test is keyed by its outcome as the claims matrix folds
it (harness/reports/matrix.py).  KTAP's result lines follow from the status.
"""

from __future__ import annotations

from typing import Union

from ..race.outcomes import Control, RunResult, Verdict, problem

Outcome = Union[Verdict, Control, str]

STATUS: dict[Outcome, str] = {
    # A race run or a pytest test that passed.
    "passed": "PASS",
    # A race run that fails (problem(run) says why), by its control, then its verdict:
    Control.MISSED: "ERROR",  # the control did not fire: the run proved nothing either way
    Verdict.BROKEN: "MISS",  # the guest was broken before the run began: never ran as a test
    Verdict.CRASHED: "FAIL",
    Verdict.WARNED: "FAIL",
    Verdict.HUNG: "FAIL",
    Verdict.SPURIOUS: "FAIL",
    Verdict.ERROR: "ERROR",  # a role produced no usable result
    Verdict.NO_RACE: "ERROR",  # the unloader never unloaded: nothing was raced
    Verdict.UNREACHED: "ERROR",  # a caller never reached the module: its code's state is unknown
    Verdict.CLEAN: "ERROR",  # only with a missed control (above); kept for completeness
    # pytest outcomes (a claim or loader-fact test):
    "failed": "FAIL",
    "error": "ERROR",  # its setup or teardown failed
    "skipped": "SKIP",
    "": "MISS",  # no result at all (the session was interrupted)
}

# KTAP version 1 result line per status: ok/not ok and the directive.
KTAP_RESULT: dict[str, tuple[str, str]] = {
    "PASS": ("ok", ""),
    "DONE": ("ok", ""),
    "FAIL": ("not ok", ""),
    "ERROR": ("not ok", "ERROR"),
    "MISS": ("not ok", "SKIP"),  # not run as a test, and still a failure of the race (exit status 1)
    "SKIP": ("ok", "SKIP"),
}


def outcome(run: RunResult) -> Outcome:
    """A race run's key into STATUS."""
    if problem(run) is None:
        return "passed"
    if run.control is Control.MISSED:
        return Control.MISSED
    return run.verdict


def run_status(run: RunResult) -> str:
    return STATUS[outcome(run)]


def test_status(pytest_outcome: str) -> str:
    return STATUS.get(pytest_outcome, "MISS")
