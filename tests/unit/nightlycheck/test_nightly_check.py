"""nightlycheck, the replay of the nightly workflow (make nightly-check), without
a root or a guest: its expressions, its stand-ins for the workflow's runners and
actions, and the artifact layout the page job's merge reads."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nightlycheck.common import CheckError
from nightlycheck.expressions import Context, evaluate, interpolate, should_run, value_of
from nightlycheck.jobs import Job, Run
from nightlycheck.standins import ACTIONS, act_cache, act_download, act_upload, artifact_root, runner_of
from nightlycheck.store import Store

REPO = Path(__file__).resolve().parents[3]
NIGHTLY = REPO / ".github" / "workflows" / "nightly.yml"


def ctx(status="success", files=(), **values):
    return Context(values, status=status, hash_files=lambda pats: "x" if set(pats) & set(files) else "")


@pytest.mark.parametrize("kernel, minutes", [("6.12-debug", 300), ("6.1-debug", 300), ("sid-debug", 300), ("6.1", 120)])
def test_the_claims_jobs_timeout_is_evaluated_as_actions_does(kernel, minutes):
    job = yaml.safe_load(NIGHTLY.read_text())["jobs"]["claims"]
    assert value_of(job["timeout-minutes"], ctx(matrix={"kernel": kernel})) == minutes


def test_interpolation_of_contexts_and_outputs():
    c = ctx(matrix={"kernel": "6.1"}, steps={"key": {"outputs": {"key": "harness-6.1-abc"}}}, github={"run_id": "7"})
    assert interpolate("Claims on ${{ matrix.kernel }}", c) == "Claims on 6.1"
    assert (
        interpolate("${{ steps.key.outputs.key }}/nightly-page-${{ github.run_id }}", c)
        == "harness-6.1-abc/nightly-page-7"
    )
    assert interpolate("${{ matrix.missing }}", c) == ""


@pytest.mark.parametrize(
    "cond, status, files, runs",
    [
        (None, "success", (), True),
        (None, "failure", (), False),  # a step after a failed one is skipped
        ("always()", "failure", (), True),
        ("always() && hashFiles('build/nightly/matrix.json') != ''", "failure", ("build/nightly/matrix.json",), True),
        ("always() && hashFiles('build/nightly/matrix.json') != ''", "success", (), False),
        ("matrix.kernel == '6.1'", "failure", (), False),  # success() && is implied
        ("${{ matrix.kernel == '6.1' }}", "success", (), True),
        ("!cancelled() && (failure() || matrix.kernel != '6.1')", "failure", (), True),
    ],
)
def test_step_conditions(cond, status, files, runs):
    assert should_run(cond, ctx(status, files, matrix={"kernel": "6.1"})) is runs


def test_a_bad_expression_is_one_line():
    with pytest.raises(CheckError, match="cannot read"):
        evaluate("matrix.kernel === 1", ctx())
    with pytest.raises(CheckError, match="no stand-in for contains"):
        evaluate("contains('a', 'b')", ctx())


def test_every_step_of_the_nightly_workflow_has_a_stand_in():
    """A new action, runner or expression in nightly.yml must get its row in
    the replay, or make nightly-check would stop at it."""
    wf = yaml.safe_load(NIGHTLY.read_text())
    c = ctx(matrix={"kernel": "6.1"}, steps={}, github={"run_id": "1"}, runner={"temp": "/t"})
    for job in wf["jobs"].values():
        runner_of(job)
        for step in job["steps"]:
            if "uses" in step:
                assert step["uses"].split("@")[0] in ACTIONS, step["uses"]
            for text in re.findall(r"\$\{\{.*?\}\}", yaml.safe_dump(step)):
                interpolate(text, c)
            should_run(step.get("if"), c)


def test_an_unknown_action_or_runner_is_refused_in_one_line():
    with pytest.raises(CheckError, match="no stand-in root for runner 'macos-latest'"):
        runner_of({"runs-on": "macos-latest"})


def test_cache_store_exact_key_then_newest_restore_key(tmp_path):
    store = Store(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("old")
    assert store.save("harness-6.1-aaa", {".cache": src}, saved=1.0)
    (src / "f").write_text("new")
    assert store.save("harness-6.1-bbb", {".cache": src}, saved=2.0)
    assert not store.save("harness-6.1-bbb", {".cache": src})  # keys are immutable
    assert store.find("harness-6.1-aaa", ["harness-6.1-"]) == ("harness-6.1-aaa", True)
    assert store.find("harness-6.1-ccc", ["harness-6.1-"]) == ("harness-6.1-bbb", False)
    assert store.find("harness-6.1-ccc", ["harness-sid-"]) == (None, False)
    store.restore("harness-6.1-bbb", {".cache": tmp_path / "ws" / ".cache"})
    assert (tmp_path / "ws" / ".cache" / "f").read_text() == "new"
    store.drop("harness-6.1-")
    assert store.entries() == []


class FakeCheck:
    def __init__(self, tmp_path):
        self.logs = tmp_path / "logs"
        self.commit = "0" * 40


def test_uploaded_kernel_jobs_are_where_the_page_jobs_merge_looks(tmp_path):
    """upload-artifact keeps build/matrix and build/logs under their common
    folder; download-artifact with a pattern puts each artifact in a folder of
    its name: nights/tonight/matrix-6.1/matrix/matrix.json, as the page job's
    glob expects, with the console logs beside it."""
    wf = yaml.safe_load(NIGHTLY.read_text())
    upload = next(s for s in wf["jobs"]["claims"]["steps"] if s.get("uses", "").startswith("actions/upload"))
    download = next(s for s in wf["jobs"]["page"]["steps"] if s.get("uses", "").startswith("actions/download"))
    run = Run(FakeCheck(tmp_path), "night1", 1)
    claims = Job(run, "claims 6.1", {}, root=tmp_path / "claims-root")
    (claims.workspace / "build" / "matrix").mkdir(parents=True)
    (claims.workspace / "build" / "matrix" / "matrix.json").write_text("{}")
    (claims.workspace / "build" / "logs").mkdir()
    (claims.workspace / "build" / "logs" / "c1.log").write_text("console")
    c = ctx(matrix={"kernel": "6.1"})
    inputs = {k: interpolate(v, c) for k, v in upload["with"].items()}
    assert act_upload(run, claims, upload, inputs, io.StringIO())
    page = Job(run, "page", {}, root=tmp_path / "page-root")
    inputs = {k: interpolate(v, c) for k, v in download["with"].items()}
    assert act_download(run, page, download, inputs, io.StringIO())
    merge = next(s for s in wf["jobs"]["page"]["steps"] if s.get("name") == "Merge and compare")
    glob = re.search(r"merge (\S+)", merge["run"]).group(1)
    found = sorted(page.workspace.glob(glob))
    assert found == [page.workspace / "nights" / "tonight" / "matrix-6.1" / "matrix" / "matrix.json"]
    assert (found[0].parent.parent / "logs" / "c1.log").read_text() == "console"


def test_artifact_root_is_the_paths_common_folder(tmp_path):
    a, b = tmp_path / "build" / "matrix", tmp_path / "build" / "logs"
    a.mkdir(parents=True)
    b.mkdir()
    assert artifact_root([a, b]) == tmp_path / "build"
    assert artifact_root([a]) == a


def test_a_saved_cache_is_restored_at_its_path_in_the_next_nights_job(tmp_path):
    """The claims job's actions/cache: night 1 misses and saves .cache after the
    job; night 2's fresh root gets it back, same files, same mtimes."""
    wf = yaml.safe_load(NIGHTLY.read_text())
    step = next(s for s in wf["jobs"]["claims"]["steps"] if s.get("uses", "").startswith("actions/cache@"))
    check = FakeCheck(tmp_path)
    check.store = Store(tmp_path / "store")
    c = ctx(matrix={"kernel": "6.1"}, steps={"key": {"outputs": {"key": "harness-6.1-abc"}}})
    inputs = {k: interpolate(v, c) for k, v in step["with"].items()}
    night1 = Job(Run(check, "night1", 1), "claims 6.1", {}, root=tmp_path / "root1")
    log = tmp_path / "cache.log"
    with open(log, "w") as out:
        assert act_cache(night1.run, night1, step, inputs, out)
    assert night1.cache_hits == {"harness-6.1-abc": "miss"}
    deb = night1.workspace / ".cache" / "debs" / "linux-image.deb"
    deb.parent.mkdir(parents=True)
    deb.write_text("kernel")
    for post in night1.post:
        post()
    night2 = Job(Run(check, "night2", 2), "claims 6.1", {}, root=tmp_path / "root2")
    with open(log, "a") as out:
        assert act_cache(night2.run, night2, step, inputs, out)
    assert night2.cache_hits == {"harness-6.1-abc": "exact"}
    assert (
        night2.list_harness_cache() == night1.list_harness_cache() == {("debs/linux-image.deb", deb.stat().st_mtime_ns)}
    )


def test_make_nightly_check_calls_the_package():
    """The Makefile's recipe, with --help for ARGS: the command line it runs is
    the package's (python -m nightlycheck from the repository's root)."""
    recipe = re.search(r"^nightly-check:.*\n\t@?(.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    argv = recipe.replace("$(PY)", sys.executable).replace("$(KERNEL)", "6.1").replace("$(ARGS)", "--help").split()
    res = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: python -m nightlycheck") and "--cold" in res.stdout


def test_without_root_it_refuses_in_one_line(monkeypatch, capsys):
    import os
    import signal

    from nightlycheck.main import main

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert main(["--kernel", "6.1"]) == 2
    finally:
        signal.signal(signal.SIGTERM, before)
    assert capsys.readouterr().err.splitlines() == [
        "nightly-check: error: needs root (mmdebstrap, chroot); run it as root"
    ]


def test_the_check_is_not_shipped_in_the_harness_wheel():
    """A developer's and CI's tool beside the package: setuptools' package
    search with pyproject's include finds the harness and not nightlycheck."""
    from setuptools import find_packages

    section = (REPO / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]", 1)[1]
    include = re.findall(r'"([^"]+)"', re.search(r"^include = \[(.*)\]$", section, re.M).group(1))
    found = find_packages(str(REPO), include=include)
    assert "harness" in found and "harness.cli" in found
    assert not [p for p in found if p.startswith("nightlycheck")]
    assert (REPO / "nightlycheck" / "__init__.py").is_file()
