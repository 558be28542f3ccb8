"""harness.reports.nightly through `python -m harness nightly merge`: the kernel
jobs' matrix.json merged into one page, compared with the previous night's (no VM)."""

import json

from harness.cli import main as cli_main
from harness.reports.matrix import Cell, Matrix

C1 = "test_claim1_refcount_get_fails_during_removal"
C4 = "test_claim4_rwsem_lookup_waits[rwsem]"
L1 = "test_loader_concurrent_loads_of_one_file[finit]"


def main(argv: list[str]) -> int:
    return cli_main(["nightly", *argv])


def night(kernel: str, release: str, version: str, c1_holds: bool | None = None) -> Matrix:
    """One kernel job's matrix: two claims and a loader fact."""
    return Matrix(
        kernels=[kernel],
        claims=sorted([C1, C4, L1]),
        versions={kernel: {"release": release, "version": version}},
        cells={
            C1: {kernel: Cell("passed", 10.0, {"spurious": 48}, claim_holds=c1_holds)},
            C4: {kernel: Cell("passed", 20.0, {"found": True})},
            L1: {kernel: Cell("passed", 5.0, {"all_got_0": kernel != "5.10", "wait_ms": 101.5}, fact=True)},
        },
    )


def write(tmp_path, name: str, mx: Matrix):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "matrix.json").write_text(json.dumps(mx.to_json()))
    return d


def jobs(tmp_path, night_name: str, **edits):
    """Two kernel jobs' folders of one night."""
    a = night("5.10", "5.10.0-46-amd64", "5.10.262-1")
    b = night("6.1", edits.get("release", "6.1.0-57-amd64"), edits.get("version", "6.1.192-3"))
    return [write(tmp_path, f"{night_name}/matrix-5.10", a), write(tmp_path, f"{night_name}/matrix-6.1", b)]


def merged(tmp_path, night_name: str, previous=None, **edits):
    out, summary = tmp_path / night_name / "page", tmp_path / night_name / "summary.md"
    argv = ["merge", *map(str, jobs(tmp_path, night_name, **edits)), "--out", str(out), "--summary", str(summary)]
    if previous is not None:
        argv += ["--previous", str(previous)]
    rc = main(argv)
    return rc, out, summary.read_text()


def test_merge_two_kernels_into_one_page(tmp_path):
    rc, out, summary = merged(tmp_path, "n1", previous=tmp_path / "none")
    assert rc == 0
    doc = json.loads((out / "matrix.json").read_text())
    assert doc["kernels"] == ["5.10", "6.1"]  # the catalogue's order
    assert doc["versions"]["6.1"] == {"release": "6.1.0-57-amd64", "version": "6.1.192-3"}
    assert set(doc["cells"][C1]) == {"5.10", "6.1"}
    assert doc["cells"][L1]["5.10"]["measured"]["all_got_0"] is False
    assert "No previous night" in summary
    page = (out / "index.html").read_text()
    assert "Since the previous night" in page and "6.1.0-57-amd64" in page


def test_unchanged_night_lists_nothing_and_passes(tmp_path):
    _, prev, _ = merged(tmp_path, "n1")
    rc, out, summary = merged(tmp_path, "n2", previous=prev)
    assert rc == 0
    assert "No change" in summary
    assert '<tr class="change-' not in (out / "index.html").read_text()


def test_planted_flip_is_at_the_top_and_fails(tmp_path):
    _, prev, _ = merged(tmp_path, "n1")
    doc = json.loads((prev / "matrix.json").read_text())
    doc["cells"][C1]["6.1"]["claim_holds"] = False  # the older night: claim 1 did not hold on 6.1
    (prev / "matrix.json").write_text(json.dumps(doc))
    rc, out, summary = merged(tmp_path, "n2", previous=prev / "matrix.json")
    assert rc == 1
    assert "claim(s) flipped" in summary
    row = next(ln for ln in summary.splitlines() if ln.startswith("| Claim flipped"))
    assert f"`{C1}`" in row and "| 6.1 |" in row and "does not hold | holds" in row
    md = (out / "matrix.md").read_text()
    assert md.index("Claim flipped") < md.index("| claim |")  # above the grid
    page = (out / "index.html").read_text()
    assert page.index('class="change-claim"') < page.index('class="matrix"')


def test_verdict_and_fact_changes_are_listed_without_failing(tmp_path):
    _, prev, _ = merged(tmp_path, "n1")
    doc = json.loads((prev / "matrix.json").read_text())
    doc["cells"][C4]["5.10"]["outcome"] = "failed"
    doc["cells"][L1]["6.1"]["measured"]["all_got_0"] = False
    doc["cells"][L1]["6.1"]["measured"]["wait_ms"] = 250.0  # a number: timing noise, no change
    (prev / "matrix.json").write_text(json.dumps(doc))
    rc, _, summary = merged(tmp_path, "n2", previous=prev)
    assert rc == 0
    assert any(ln.startswith("| Verdict changed | 5.10 |") and "failed | passed" in ln for ln in summary.splitlines())
    fact = [ln for ln in summary.splitlines() if ln.startswith("| Loader fact changed")]
    assert len(fact) == 1 and "6.1" in fact[0] and "all_got_0" in fact[0] and "wait_ms" not in fact[0]


def test_changed_kernel_version_is_listed(tmp_path):
    _, prev, _ = merged(tmp_path, "n1")
    rc, out, summary = merged(tmp_path, "n2", previous=prev, release="6.1.0-58-amd64", version="6.1.193-1")
    assert rc == 0
    row = next(ln for ln in summary.splitlines() if ln.startswith("| Kernel changed"))
    assert "6.1.0-57-amd64 (6.1.192-3)" in row and "6.1.0-58-amd64 (6.1.193-1)" in row
    assert "6.1.0-58-amd64" in (out / "index.html").read_text()


def test_unreadable_input_is_exit_2(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_kernel_job_without_matrix_is_left_out_and_shows_as_gone(tmp_path):
    _, prev, _ = merged(tmp_path, "n1")
    a = write(tmp_path, "n2/matrix-5.10", night("5.10", "5.10.0-46-amd64", "5.10.262-1"))
    summary = tmp_path / "s.md"
    rc = main(
        [
            "merge",
            str(a / "matrix.json"),
            str(tmp_path / "n2/matrix-6.1/matrix.json"),
            "--out",
            str(tmp_path / "o"),
            "--previous",
            str(prev),
            "--summary",
            str(summary),
        ]
    )
    assert rc == 0
    assert any(ln.startswith("| Kernel changed | 6.1 |") and "absent" in ln for ln in summary.read_text().splitlines())


def test_console_logs_from_the_uploaded_jobs_are_copied_beside_the_page(tmp_path):
    """The cells name logs by the runner's absolute paths; the merged page finds
    them in each job's artifact (logs/ beside matrix/) and links its own copies."""
    mx = night("6.1", "6.1.0-57-amd64", "6.1.192-3")
    mx.cells[C1]["6.1"].console_logs = ["/runner/work/project/build/logs/c1-6.1.log"]
    mx.cells[C4]["6.1"].console_logs = ["/runner/work/project/build/logs/gone.log"]
    job = tmp_path / "tonight" / "matrix-6.1"
    (job / "matrix").mkdir(parents=True)
    (job / "matrix" / "matrix.json").write_text(json.dumps(mx.to_json()))
    (job / "logs").mkdir()
    (job / "logs" / "c1-6.1.log").write_text("console of claim 1\n")
    out = tmp_path / "page"
    assert main(["merge", str(job / "matrix" / "matrix.json"), "--out", str(out)]) == 0
    assert (out / "logs" / "6.1" / "c1-6.1.log").read_text() == "console of claim 1\n"
    html = (out / "index.html").read_text()
    assert 'href="logs/6.1/c1-6.1.log"' in html
    assert 'gone.log</code> <span class="note">(not kept)' in html
    cells = json.loads((out / "matrix.json").read_text())["cells"]
    assert cells[C1]["6.1"]["console_logs"] == [str(out / "logs" / "6.1" / "c1-6.1.log")]
