"""The HTML reports without a browser: what the timeline and the CDF show for a
synthetic race, the page's content and self-containment, `race --html` and
index.html beside the JSON report, the matrix page."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from test_html_events import FAILURES_US, LOOKER_LATE_US, WINDOWS_US, synthetic_run

import htmlsim
from fakeguest import FakeStages
from harness.cli import main
from harness.cli import race as race_cli
from harness.exitcodes import ExitStatus
from harness.race import engine as race
from harness.race.racer import hist_of
from harness.reports import plots
from harness.reports.matrix import Matrix, build_matrix
from harness.reports.matrix_page import write_matrix
from harness.reports.plots import PLOTS_MISSING, SpanKind, cdf_points, race_figures, timeline_data, zoom_range
from harness.reports.race_page import race_html, write_race_pages

needs_matplotlib = pytest.mark.skipif(
    plots.plotting_missing() is not None,
    reason="matplotlib missing: the optional extra 'report' (make test installs it)",
)


# ---------------------------------------------------------------- what the plots show


def test_timeline_data_of_a_synthetic_race():
    run = synthetic_run()
    data = timeline_data(run.timeline, 4.0)
    deleting = [(s.start_s, s.end_s) for s in data.spans if s.kind is SpanKind.DELETING]
    gone = [(s.start_s, s.end_s) for s in data.spans if s.kind is SpanKind.GONE]
    assert deleting == [(b / 1e6, d / 1e6) for b, d, _ in WINDOWS_US]
    assert gone == [(d / 1e6, r / 1e6) for _, d, r in WINDOWS_US]
    late = LOOKER_LATE_US / 1e6
    assert sorted(data.failures) == [("lookup", "ENODEV"), ("lookup", "ENOENT")]
    for (_, errno), times in data.failures.items():
        assert times == pytest.approx([e / 1e6 + late for _, e, err in FAILURES_US if err == errno])
    # the second ENODEV falls while delete_module runs, the ENOENT after it returned
    assert deleting[1][0] < data.failures[("lookup", "ENODEV")][1] < deleting[1][1]
    assert gone[1][0] < data.failures[("lookup", "ENOENT")][0] < gone[1][1]
    rate = data.rates["lookup"]
    assert rate.bin_s == 0.1 and rate.starts_s[:3] == (0.0, 0.1, 0.2) and sum(rate.done) == 40
    assert rate.ok[10] == 0 and data.failures_total == {"lookup": 3}
    lo, hi = zoom_range(data)
    assert lo <= data.failure_times()[0] <= hi and hi - lo < 3.0


def test_a_failed_reload_leaves_the_module_absent_until_the_next_unload():
    import dataclasses

    run = synthetic_run()
    first, *rest = run.timeline.windows
    # another module's unload in between (two unloaders) does not end the absence
    other = dataclasses.replace(
        first,
        begin_ms=first.reloaded_ms + 10,
        deleted_ms=first.reloaded_ms + 20,
        reloaded_ms=first.reloaded_ms + 30,
        module="rc_prov1",
    )
    tl = dataclasses.replace(run.timeline, windows=(dataclasses.replace(first, load_error="EBUSY"), other, *rest))
    absent = [s for s in timeline_data(tl, 4.0).spans if s.kind is SpanKind.ABSENT]
    assert [(s.start_s, s.end_s) for s in absent] == [(first.reloaded_ms / 1000, rest[0].begin_ms / 1000)]


def test_cdf_points_are_the_histograms_cumulative_fractions():
    samples = [1_000_000] * 3 + [200_000_000]  # three 1-ms calls, one 200-ms call
    xs, ys = cdf_points(hist_of(samples))
    assert ys == [0.75, 1.0]
    assert xs[0] == pytest.approx(1.0, rel=0.01) and xs[1] == pytest.approx(200.0, rel=0.01)


def test_successful_and_failed_latencies_are_apart():
    lookup = synthetic_run().ops["lookup"]
    assert lookup.has_failed_hist
    assert sum(c for _, c in lookup.hist_ok) == 37 and sum(c for _, c in lookup.hist_failed) == 3
    assert max(cdf_points(lookup.hist_failed)[0]) < 1.0 < min(cdf_points(lookup.hist_ok)[0])


# ---------------------------------------------------------------- the page


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@needs_matplotlib
def test_plots_are_real_pictures():
    from PIL import Image, ImageStat

    rep = htmlsim.report()
    figures = race_figures([rep])
    timeline = Image.open(io.BytesIO(figures[(0, 0)].timeline)).convert("L")
    cdf = Image.open(io.BytesIO(figures[(0, 0)].cdf)).convert("L")
    assert timeline.size == (1250, 660) and cdf.size == (760, 360)
    assert ImageStat.Stat(timeline).stddev[0] > 20 and ImageStat.Stat(cdf).stddev[0] > 20, "a blank plot"


@needs_matplotlib
def test_the_page_is_self_contained_and_says_what_was_run(tmp_path):
    log = tmp_path / "logs" / "console.log"
    log.parent.mkdir()
    log.write_text("console\n")
    rep = htmlsim.report(str(log))
    (tmp_path / "r").mkdir()
    (page_path,) = write_race_pages([rep], [tmp_path / "r" / "index.html"])
    page = page_path.read_text()
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    srcs = re.findall(r'\b(?:src|href)="([^"]+)"', page)
    assert all(s.startswith(("data:image/png;base64,", "#", "../")) for s in srcs), srcs
    assert len(_images(page)) == 5, "refcount and rwsem: timeline + CDF; unsafe: a timeline (its looker died)"
    assert 'href="../logs/console.log"' in page
    for text in (
        "seed <b>5</b>",
        "exit_delay_ms=200",
        "accel <b>tcg</b>",
        "6.1.0-57-amd64",
        "python -m harness race --scheme refcount --workload lookup --seed 5",
        "BUG: kernel NULL pointer dereference in un_prov0_call",
        "RIP: 0010:un_prov0_call+0x10/0x30",
        "ENODEV",
    ):
        assert text in page, text
    assert page.count('<section class="run"') == 3


def test_without_matplotlib_the_page_has_tables_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plotting_missing", lambda: PLOTS_MISSING)
    rep = htmlsim.report()
    assert race_figures([rep]) is None
    page = race_html([rep], tmp_path, None)
    assert _images(page) == [] and "pip install -e &#x27;.[report]&#x27;" in page
    assert "refcount" in page and "spurious" in page


def _cmd(argv, tmp_path, monkeypatch):
    monkeypatch.setattr(race, "HANG_SLACK_S", 0.5)
    monkeypatch.setattr(race, "CONSOLE_SETTLE_S", 0.0)
    monkeypatch.setattr(race, "POLL_S", 0.01)
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    args = race_args(["--scheme", "refcount", "--workload", "lookup", "--duration", "0.2", *argv])
    return race_cli.cmd_race(args, stages=lambda spec: FakeStages({}))


def race_args(argv):
    from harness.cli import parser

    return parser().parse_args(["race", *argv])


def test_race_writes_index_html_beside_its_json_and_at_html(tmp_path, monkeypatch, capsys):
    code = _cmd(["--html", str(tmp_path / "mine.html")], tmp_path, monkeypatch)
    assert code == ExitStatus.OK
    (folder,) = (tmp_path / "build" / "reports").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "report.json"]
    assert json.loads((folder / "report.json").read_text())["runs"][0]["scheme"] == "refcount"
    for page in (folder / "index.html", tmp_path / "mine.html"):
        assert "refcount / lookup" in page.read_text()
    assert f"page: {tmp_path / 'mine.html'}" in capsys.readouterr().err


def test_race_html_without_matplotlib_refuses_in_one_line_before_booting(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots, "plotting_missing", lambda: PLOTS_MISSING)
    booted = []
    monkeypatch.setattr(race, "PipelineStages", lambda spec: booted.append(spec))
    code = main(["race", "--html", str(tmp_path / "x.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitStatus.BAD_INPUT and booted == []
    assert len(err) == 1 and err[0].startswith("error: --html") and "pip install -e '.[report]'" in err[0]


def test_race_html_to_a_folder_is_refused(tmp_path, capsys):
    assert main(["race", "--html", str(tmp_path)]) == ExitStatus.BAD_INPUT
    assert "--html" in capsys.readouterr().err


# ---------------------------------------------------------------- the matrix page


def _rec(nodeid, outcome, props):
    return {
        "nodeid": nodeid,
        "when": "call",
        "outcome": outcome,
        "duration": 3.21,
        "user_properties": [list(p) for p in props],
        "longrepr": "E   boom" if outcome == "failed" else "",
    }


def test_matrix_page_colours_cells_and_opens_their_measurements(tmp_path):
    kept = tmp_path / "logs" / "kept.log"
    kept.parent.mkdir()
    kept.write_text("console\n")
    recs = [
        _rec(
            "t.py::test_claim1_x[6.1]",
            "passed",
            [("kernel", "6.1"), ("measured", {"spurious": 48}), ("console_logs", [str(kept)])],
        ),
        _rec(
            "t.py::test_claim1_x[6.12]",
            "passed",
            [("kernel", "6.12"), ("claim_holds", False), ("console_logs", [str(tmp_path / "gone.log")])],
        ),
        _rec("t.py::test_claim2_y[6.1]", "failed", [("kernel", "6.1")]),
        _rec("t.py::test_loader_z[6.1]", "passed", [("kernel", "6.1"), ("kind", "fact")]),
    ]
    mx = build_matrix(recs, ("6.1", "6.12"))
    assert mx.cell("test_claim1_x", "6.1").console_logs == [str(kept)]
    write_matrix(mx, tmp_path / "m")
    page = (tmp_path / "m" / "index.html").read_text()
    cells = re.findall(r'<td class="cell (m-\w+)"><a href="#(c\d+-\d+)"><b>(\w+)</b><br>([^<]*)<', page)
    assert [(c, m, t) for c, _, m, t in cells] == [
        ("m-holds", "PASS", "holds"),
        ("m-not", "PASS", "does not hold"),
        ("m-fail", "FAIL", "test failed"),
        ("m-fact", "PASS", "fact"),
    ]
    for _, anchor, _, _ in cells:
        assert f'id="{anchor}"' in page, "every cell opens its details"
    detail = page[page.index('id="c0-0"') :]
    assert "&quot;spurious&quot;: 48" in detail[:600] and 'href="../logs/kept.log"' in detail[:600]
    assert 'gone.log</code> <span class="note">(not kept)' in page and "E   boom" in page
    assert "<script" not in page and "http" not in page.split("<body>")[1]


def test_matrix_page_again_from_its_json(tmp_path, capsys):
    mx = build_matrix([_rec("t.py::test_claim1_x[6.1]", "passed", [("kernel", "6.1")])], ("6.1",))
    write_matrix(mx, tmp_path)
    (tmp_path / "index.html").unlink()
    assert Matrix.from_json(json.loads((tmp_path / "matrix.json").read_text())).to_json() == mx.to_json()
    assert main(["matrix-page", str(tmp_path)]) == 0 and (tmp_path / "index.html").is_file()
    assert main(["matrix-page", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_compact_json_keeps_short_values_on_one_line_and_stays_json():
    from harness.reports.matrix_page import compact_json

    doc = {
        "loads": [[0, 596.5], ["EEXIST", 653.1]],
        "wait_ms": {"0": {"min": 540.9, "max": 596.5}},
        "detail": [{"end": "completed", "role_errors": [], "text": "x" * 120}],
    }
    text = compact_json(doc, width=60)
    assert json.loads(text) == doc
    lines = text.splitlines()
    assert '  "loads": [[0, 596.5], ["EEXIST", 653.1]],' in lines
    assert max(len(ln) for ln in lines if "xxx" not in ln) <= 60
    assert compact_json([1, 2, 3]) == "[1, 2, 3]"


def test_eexist_on_reload_means_the_module_is_back_not_absent():
    import dataclasses

    run = synthetic_run()
    first, *rest = run.timeline.windows
    tl = dataclasses.replace(run.timeline, windows=(dataclasses.replace(first, load_error="EEXIST"), *rest))
    assert not [s for s in timeline_data(tl, 4.0).spans if s.kind is SpanKind.ABSENT]


def test_a_json_report_draws_the_same_page_again(tmp_path, capsys):
    from harness.race.outcomes import reports_from_json

    rep = htmlsim.report()
    doc = json.loads(json.dumps(rep.to_json()))
    (back,) = reports_from_json(doc)
    assert back.to_json() == rep.to_json()
    for a, b in zip(rep.runs, back.runs):
        assert a.timeline is None or timeline_data(a.timeline, 6.0) == timeline_data(b.timeline, 6.0)
    assert race_html([back], tmp_path, None) == race_html([rep], tmp_path, None)
    src = tmp_path / "report.json"
    src.write_text(json.dumps([doc]))
    assert main(["race-page", str(src)]) == 0 and "refcount / lookup" in (tmp_path / "index.html").read_text()
    src.write_text('{"kernel": "x"}')
    assert main(["race-page", str(src)]) == 2
    assert capsys.readouterr().err.startswith("error: not a race JSON report")
