"""The check: two nights and a planted change, and what held of each."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .common import BUILD, CACHE, PROJECT, WORKFLOW, CheckError, copy_tree, debroot, lines, say
from .jobs import Job, Run
from .standins import Runner
from .store import Store


@dataclass
class Verdict:
    what: str
    held: bool
    detail: str


class Check:
    def __init__(self, kernel: str, cold: bool):
        self.kernel = kernel
        self.workflow = yaml.safe_load(WORKFLOW.read_text())
        kernels = self.workflow["jobs"]["claims"]["strategy"]["matrix"]["kernel"]
        if kernel not in kernels:
            raise CheckError(f"--kernel {kernel}: not in the nightly matrix ({', '.join(kernels)})")
        self.commit = subprocess.run(
            ["git", "-C", str(PROJECT), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        self.logs = BUILD / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.store = Store(CACHE / "actions-cache")
        self.store.root.mkdir(parents=True, exist_ok=True)
        if cold:
            shutil.rmtree(self.store.root)
            self.store.root.mkdir(parents=True)
        # Each check starts as a repository's first night: no previous page.
        self.store.drop("nightly-page-")
        self.verdicts: list[Verdict] = []

    def pristine(self, runner: Runner) -> Path:
        root = CACHE / "roots" / f"{runner.suite}-{runner.variant}-{'-'.join(runner.packages) or 'base'}"
        debroot("make", str(root), runner.suite, runner.variant, *runner.packages)
        return root

    def verdict(self, what: str, held: bool, detail: str) -> None:
        self.verdicts.append(Verdict(what, held, detail))
        say(f"{'ok' if held else 'NOT OK'}: {what}: {detail}")

    def night(self, name: str, run_id: int) -> tuple[Run, Job, Job]:
        run = Run(self, name, run_id)
        claims = run.run_job("claims", {"kernel": self.kernel})
        page = run.run_job("page", {})
        return run, claims, page

    def summary(self, job: Job) -> str:
        """What the run's steps wrote to $GITHUB_STEP_SUMMARY."""
        src = job.run.logs / "step-summary.md"
        return src.read_text() if src.is_file() else ""

    def main(self) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        say(
            f"replaying {WORKFLOW.relative_to(PROJECT)} for kernel {self.kernel} at {self.commit[:12]}; "
            f"logs in {self.logs}"
        )
        r1, c1, p1 = self.night("night1", 1)
        r2, c2, p2 = self.night("night2", 2)
        fresh = sorted(name for name, _ in c2.harness_cache - c1.harness_cache)
        for night, c, p in (("night 1", c1, p1), ("night 2", c2, p2)):
            self.verdict(
                f"{night}: the {self.kernel} job passes",
                c.ctx.status == "success",
                ", ".join(f"{s.name}: {s.outcome}" for s in c.steps if s.outcome != "skipped"),
            )
            self.verdict(f"{night}: the page job passes", p.ctx.status == "success", p.ctx.status)
        key_hits = list(c2.cache_hits.values())
        self.verdict(
            "night 2: the harness cache is restored by its exact key", key_hits == ["exact"], f"cache hits {key_hits}"
        )
        self.verdict(
            "night 2: nothing new downloaded or built",
            not fresh,
            f"the same {len(c2.harness_cache)} .debs, kernel trees and build roots as night 1"
            if not fresh
            else f"new or remade: {', '.join(fresh[:5])}",
        )
        s1, s2 = self.summary(p1), self.summary(p2)
        self.verdict(
            "night 1's page: no previous night",
            "No previous night to compare with" in s1,
            s1.splitlines()[2] if len(s1.splitlines()) > 2 else s1,
        )
        self.verdict(
            "night 2's page: no change since night 1",
            "No change:" in s2,
            s2.splitlines()[2] if len(s2.splitlines()) > 2 else s2,
        )
        self.planted(r2)
        return self.report(c1, c2)

    def planted(self, tonight: Run) -> None:
        """Night 2's page job again, its previous night being night 1's page with
        one claim's cell flipped."""
        kept = next(
            lines(st["with"]["path"])[0]
            for st in self.workflow["jobs"]["page"]["steps"]
            if str(st.get("uses", "")).startswith("actions/cache/save")
        )  # nights/previous
        old = self.store.folder("nightly-page-1") / "data" / kept / "matrix.json"
        if not old.is_file():
            self.verdict("planted: night 1's page kept for the next night", False, f"no {old}")
            return
        doc = json.loads(old.read_text())
        target = None
        for claim, row in doc["cells"].items():
            cell = row.get(self.kernel)
            if cell and cell.get("outcome") == "passed" and not cell.get("fact") and "claim" in claim:
                target = claim
                cell["claim_holds"] = not (cell.get("claim_holds") is not False)
                break
        if target is None:
            self.verdict("planted: a passing claim to flip in night 1's page", False, "none found")
            return
        planted = CACHE / "planted"
        shutil.rmtree(planted, ignore_errors=True)
        planted.mkdir(parents=True)
        (planted / "matrix.json").write_text(json.dumps(doc))
        self.store.save("nightly-page-planted", {kept: planted}, saved=time.time() + 1e6)  # the newest entry
        shutil.rmtree(planted)
        run = Run(self, "planted", 3)
        for art in tonight.artifacts.glob("matrix-*"):
            copy_tree(art, run.artifacts / art.name)
        try:
            page = run.run_job("page", {})
        finally:
            self.store.drop("nightly-page-planted")
            self.store.drop("nightly-page-3")
        merge = next((s for s in page.steps if s.name == "Merge and compare"), None)
        self.verdict(
            "planted: the page job fails on the flipped claim",
            merge is not None and merge.outcome == "failure",
            f"merge step: {merge.outcome if merge else '?'}",
        )
        rows = self.summary(page).splitlines()
        head = next((rows[i + 1] for i, x in enumerate(rows[:-1]) if x.startswith("|---")), "")
        self.verdict(
            "planted: the flip heads the page's summary",
            head.startswith("| Claim flipped |") and f"| {self.kernel} |" in head and target in head,
            head or "no table of changes",
        )
        html = run.artifacts / "nightly-page" / "index.html"
        body = html.read_text() if html.is_file() else ""
        changes = body.find('<table class="changes"')
        self.verdict(
            "planted: the page shows the change above the grid",
            changes >= 0
            and body.find("<table") == changes
            and "change-claim" in body
            and target in body[changes : body.find("</table>", changes)],
            str(html) if body else "no nightly-page artifact",
        )

    def report(self, c1: Job, c2: Job) -> int:
        def mmss(s: float) -> str:
            return f"{int(s) // 60}m{int(s) % 60:02d}s"

        out = [
            f"nightly-check {self.logs.name}: {WORKFLOW.relative_to(PROJECT)}, kernel {self.kernel}, "
            f"commit {self.commit[:12]}",
            f"claims job {self.kernel}: night 1 {mmss(c1.seconds)} (harness cache: "
            f"{', '.join(c1.cache_hits.values())}), night 2 {mmss(c2.seconds)} "
            f"(harness cache: {', '.join(c2.cache_hits.values())})",
            "",
        ]
        out += [f"{'ok    ' if v.held else 'NOT OK'} {v.what}: {v.detail}" for v in self.verdicts]
        text = "\n".join(out) + "\n"
        (self.logs / "summary.txt").write_text(text)
        print(text, end="")
        say(f"summary in {self.logs / 'summary.txt'}")
        return 0 if all(v.held for v in self.verdicts) else 1
