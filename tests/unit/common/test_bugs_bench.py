"""The bug benchmark's table (bench/bugs): every case has its patch, every
patch its case, and an upstream case names the fix its patch puts back."""

from __future__ import annotations

import sys

import pytest

from tests.tools import REPO

sys.path.insert(0, str(REPO / "bench" / "bugs"))

import run  # noqa: E402
from cases import CASES  # noqa: E402


def test_every_case_has_its_patch_and_every_patch_its_case():
    run.check_cases()


def test_a_patch_without_a_case_is_refused(monkeypatch):
    monkeypatch.setattr(run, "CASES", CASES[1:])
    with pytest.raises(SystemExit, match="no case in bench/bugs/cases.py"):
        run.check_cases()


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "upstream"], ids=lambda c: c.name)
def test_an_upstream_case_cites_the_fix_its_patch_puts_back(case):
    commit = case.cite.split("(")[-1].split(",")[0]
    assert len(commit) == 12 and commit in run.patch_of(case).read_text().split("\n\n")[0]


def test_the_issue_asks_for_six_upstream_bugs_and_eight_broken_modules_of_four_kinds():
    assert sum(c.kind == "upstream" for c in CASES) >= 6
    broken = [c for c in CASES if c.kind == "broken"]
    assert len(broken) >= 8 and len({c.what for c in broken}) >= 4


def test_a_splat_a_few_ms_before_the_callers_start_is_caught_at_0_s():
    rows = [
        {
            "case": c,
            "kind": "broken",
            "patched": {"verdict": "crashed", "first_splat_ms": ms},
            "unpatched": {"verdict": "clean"},
        }
        for c, ms in (("a", -11.146), ("b", 700.0), ("c", None))
    ]
    assert [run.catch_s(r["patched"]) for r in rows] == [0.0, 0.7, None]
    assert run.summary(rows)[-1] == "time to catch: median 0.3 s, min 0.0 s, max 0.7 s (n=2)"
