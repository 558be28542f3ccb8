"""harness.reports.matrix: claim x kernel table from test report records (no VM)."""

import json

from harness.reports.matrix import build_matrix, render_markdown, split_nodeid
from harness.reports.matrix_page import write_matrix

KERNELS = ("6.1", "6.12", "6.1-rt", "6.12-rt")
F1 = "tests/claims/test_claim1_x.py::test_claim1_x"
F4 = "tests/claims/test_claim4_y.py::test_claim4_y"


def rec(nodeid, when, outcome, props=(), duration=1.0, longrepr=""):
    return {
        "nodeid": nodeid,
        "when": when,
        "outcome": outcome,
        "duration": duration,
        "user_properties": [list(p) for p in props],
        "longrepr": longrepr,
    }


def phases(nodeid, call="passed", props=(), setup="passed", teardown="passed", duration=12.34, longrepr=""):
    return [
        rec(nodeid, "setup", setup, props[:1]),
        *([rec(nodeid, "call", call, props, duration, longrepr)] if setup == "passed" else []),
        rec(nodeid, "teardown", teardown, props),
    ]


def test_split_nodeid_kernel_variants():
    assert split_nodeid(F1 + "[6.1]", KERNELS) == ("test_claim1_x", "6.1", "")
    assert split_nodeid(F1 + "[6.1-rt]", KERNELS) == ("test_claim1_x", "6.1-rt", "")
    assert split_nodeid(F1 + "[6.12]", KERNELS) == ("test_claim1_x", "6.12", "")
    assert split_nodeid(F4 + "[6.12-rt-rwsem-deferred]", KERNELS) == ("test_claim4_y", "6.12-rt", "rwsem-deferred")
    assert split_nodeid(F4 + "[rwsem-deferred-6.1]", KERNELS) == ("test_claim4_y", "6.1", "rwsem-deferred")
    assert split_nodeid(F4 + "[rwsem-6.1-x]", KERNELS) == ("test_claim4_y", "6.1", "rwsem-x")
    assert split_nodeid(F1, KERNELS) == ("test_claim1_x", None, "")
    assert split_nodeid(F4 + "[foo]", KERNELS) == ("test_claim4_y", None, "foo")


def test_cells_outcomes_and_measured():
    recs = (
        phases(F1 + "[6.1]", props=[("kernel", "6.1"), ("measured", {"spurious": 48})])
        + phases(
            F1 + "[6.12]",
            call="failed",
            props=[("kernel", "6.12"), ("measured", {"spurious": 0})],
            longrepr="E   AssertionError: no spurious failure",
        )
        + phases(F4 + "[6.1-rwsem]", props=[("kernel", "6.1")])
        + phases(F4 + "[6.1-rt-rwsem]", setup="failed", props=[("kernel", "6.1-rt")])
    )
    mx = build_matrix(recs, KERNELS)
    assert mx.kernels == ["6.1", "6.12", "6.1-rt"]
    assert mx.claims == ["test_claim1_x", "test_claim4_y[rwsem]"]
    c = mx.cell("test_claim1_x", "6.1")
    assert (c.outcome, c.seconds, c.measured) == ("passed", 12.3, {"spurious": 48})
    c = mx.cell("test_claim1_x", "6.12")
    assert c.outcome == "failed" and "no spurious" in c.message
    assert mx.cell("test_claim4_y[rwsem]", "6.1-rt").outcome == "error"
    assert mx.cell("test_claim4_y[rwsem]", "6.12") is None
    assert mx.totals() == {"error": 1, "failed": 1, "passed": 2}


def test_teardown_failure_after_pass_is_error():
    mx = build_matrix(phases(F1 + "[6.1]", teardown="failed"), KERNELS)
    assert mx.cell("test_claim1_x", "6.1").outcome == "error"


def test_kernel_from_id_when_property_missing_and_order():
    recs = phases(F1 + "[6.12-rt]") + phases(F1 + "[6.1]")
    mx = build_matrix(recs, KERNELS)
    assert mx.kernels == ["6.1", "6.12-rt"]  # known order, not arrival order


def test_markdown_and_json(tmp_path):
    recs = phases(
        F1 + "[6.1]", props=[("kernel", "6.1"), ("measured", {"errors": {"ENODEV": 3}, "x": "a|b"})]
    ) + phases(F1 + "[6.12]", call="failed", props=[("kernel", "6.12")], longrepr="E   boom\n")
    mx = build_matrix(recs, KERNELS)
    md = render_markdown(mx)
    assert "| claim | 6.1 | 6.12 |" in md
    assert "| `test_claim1_x` | PASS, holds (12.3s) | FAIL (12.3s) |" in md
    assert '"ENODEV":3' in md and "a\\|b" in md  # pipes escaped inside the table's neighbourhood
    assert "E   boom" in md
    j, m = write_matrix(mx, tmp_path / "out")
    doc = json.loads(j.read_text())
    assert doc["cells"]["test_claim1_x"]["6.1"]["measured"] == {"errors": {"ENODEV": 3}, "x": "a|b"}
    assert doc["totals"] == {"failed": 1, "passed": 1}
    assert m.read_text() == md


def test_long_measured_is_truncated():
    big = {"k": "v" * 500, "detail": {"x": 1}}
    mx = build_matrix(phases(F1 + "[6.1]", props=[("measured", big)]), KERNELS)
    line = [ln for ln in render_markdown(mx).splitlines() if ln.startswith("- **6.1**")][0]
    assert len(line) < 330 and line.endswith("…`") and "detail" not in line
    assert mx.cell("test_claim1_x", "6.1").measured == big  # JSON keeps everything


def test_verbose_keys_only_in_json():
    m = {"spurious": 3, "runs": [{"a": 1}], "detail": {"b": 2}}
    mx = build_matrix(phases(F1 + "[6.1]", props=[("measured", m)]), KERNELS)
    md = render_markdown(mx)
    assert '`{"spurious":3}`' in md
    assert mx.to_json()["cells"]["test_claim1_x"]["6.1"]["measured"] == m


def test_claim_holds_property():
    """A passing test that measured a contradiction says `does not hold`; a
    failing one says nothing about the claim."""
    recs = (
        phases(F1 + "[6.1]", props=[("kernel", "6.1"), ("claim_holds", False)])
        + phases(F1 + "[6.12]", props=[("kernel", "6.12"), ("claim_holds", True)])
        + phases(F1 + "[6.1-rt]", call="failed", props=[("kernel", "6.1-rt"), ("claim_holds", False)])
    )
    mx = build_matrix(recs, KERNELS)
    assert [mx.cell("test_claim1_x", k).holds() for k in ("6.1", "6.12", "6.1-rt")] == [False, True, None]
    md = render_markdown(mx)
    assert "| `test_claim1_x` | PASS, does not hold (12.3s) | PASS, holds (12.3s) | FAIL (12.3s) |" in md
    assert mx.to_json()["cells"]["test_claim1_x"]["6.1"]["claim_holds"] is False


def test_a_fact_passes_without_holding_anything():
    recs = phases(F1 + "[6.1]", props=[("kernel", "6.1"), ("kind", "fact")])
    md = render_markdown(build_matrix(recs, known_kernels=KERNELS))
    assert "| PASS (12.3s) |" in md and "holds" not in md.split("## Measured")[0].split("|---|")[-1]


def test_kernel_versions_from_properties_round_trip(tmp_path):
    from harness.reports.matrix import Matrix

    props = [("kernel", "6.1"), ("kernel_release", "6.1.0-57-amd64"), ("kernel_version", "6.1.192-3")]
    mx = build_matrix(phases(F1 + "[6.1]", props=props), KERNELS)
    assert mx.versions == {"6.1": {"release": "6.1.0-57-amd64", "version": "6.1.192-3"}}
    assert "6.1 6.1.0-57-amd64 (6.1.192-3)" in render_markdown(mx)
    write_matrix(mx, tmp_path)
    doc = json.loads((tmp_path / "matrix.json").read_text())
    assert Matrix.from_json(doc).versions == mx.versions
    del doc["versions"]  # an older night's matrix.json
    assert Matrix.from_json(doc).versions == {}
