"""One night's run of the workflow: its jobs, each in a fresh copy of its
runner's Debian root, and their steps, `run:` chrooted with bash -e and
`uses:` through the actions' stand-ins."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from harness.util import safe_name

from .common import CACHE, DEBROOT, HEARTBEAT_S, RUNNER_TEMP, WORKSPACE, CheckError, copy_tree, debroot, say
from .expressions import Context, interpolate, should_run, value_of
from .standins import ACTIONS, HERE, runner_of

if TYPE_CHECKING:
    from .check import Check


@dataclass
class StepResult:
    name: str
    outcome: str  # success | failure | skipped
    seconds: float


@dataclass
class Job:
    run: "Run"
    name: str  # the job id, with the matrix value
    spec: dict[str, Any]
    root: Path = Path()
    ctx: Context = field(default_factory=lambda: Context({}))
    path_prepend: list[str] = field(default_factory=list)
    post: list[Callable[[], None]] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    cache_hits: dict[str, str] = field(default_factory=dict)  # key -> exact | partial | miss
    deadline: float = 0.0
    seconds: float = 0.0
    # The harness cache's kernel packages, trees and build roots at the job's
    # end, with their mtimes (a restore keeps them; a new download or build does not).
    harness_cache: set[tuple[str, int]] = field(default_factory=set)

    def list_harness_cache(self) -> set[tuple[str, int]]:
        cache = self.workspace / ".cache"
        return {
            (f"{sub}/{x.name}", x.stat().st_mtime_ns)
            for sub in ("debs", "kernels", "buildroots")
            if (cache / sub).is_dir()
            for x in (cache / sub).iterdir()
            if not x.name.endswith(".lock")
        }

    @property
    def workspace(self) -> Path:
        return self.root / WORKSPACE.lstrip("/")

    def host(self, p: str) -> Path:
        """A path of the job (absolute in the root, or relative to the workspace) on this host."""
        return self.root / p.lstrip("/") if p.startswith("/") else self.workspace / p

    def hash_files(self, patterns: list[str]) -> str:
        hits = [f for pat in patterns for f in sorted(self.workspace.glob(pat)) if f.is_file()]
        return "x" if hits else ""

    def env(self) -> list[str]:
        path = ":".join([*self.path_prepend, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
        out = [
            f"PATH={path}",
            "GITHUB_ACTIONS=true",
            f"GITHUB_RUN_ID={self.run.run_id}",
            f"GITHUB_WORKSPACE={WORKSPACE}",
            f"RUNNER_TEMP={RUNNER_TEMP}",
            f"GITHUB_OUTPUT={RUNNER_TEMP}/output",
            f"GITHUB_STEP_SUMMARY={RUNNER_TEMP}/summary",
        ]
        if any(Path("/usr/local/share/ca-certificates").glob("*.crt")):
            # This machine reaches the package index through a TLS-inspecting
            # proxy; GitHub's runners reach it directly.
            out.append("PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
        return out


class Run:
    """One night: a run of the workflow with its own artifacts."""

    def __init__(self, check: "Check", night: str, run_id: int):
        self.check, self.night, self.run_id = check, night, run_id
        self.logs = check.logs / night
        self.artifacts = check.logs / night / "artifacts"

    def run_job(self, job_id: str, matrix: dict[str, Any]) -> Job:
        spec = self.check.workflow["jobs"][job_id]
        label = job_id + "".join(f" {v}" for v in matrix.values())
        job = Job(self, label, spec)
        runner = runner_of(spec)
        pristine = self.check.pristine(runner)
        job.root = CACHE / "jobs" / safe_name(label)
        debroot("remove", str(job.root))
        say(f"[{self.night}] job {label}: a fresh copy of the {runner.note} root")
        copy_tree(pristine, job.root)
        (job.root / RUNNER_TEMP.lstrip("/")).mkdir(parents=True, exist_ok=True)
        job.workspace.mkdir(parents=True, exist_ok=True)
        job.ctx = Context(
            {
                "matrix": matrix,
                "steps": {},
                "github": {"run_id": str(self.run_id), "workspace": WORKSPACE},
                "runner": {"temp": RUNNER_TEMP},
            },
            hash_files=job.hash_files,
        )
        minutes = value_of(spec.get("timeout-minutes", 360), job.ctx)
        job.deadline = time.monotonic() + float(minutes) * 60
        start = time.monotonic()
        try:
            for n, step in enumerate(spec["steps"], 1):
                self.run_step(job, n, step)
            for hook in job.post:  # post steps: the caches' saves
                hook()
            job.harness_cache = job.list_harness_cache()
        finally:
            debroot("remove", str(job.root))
        job.seconds = time.monotonic() - start
        say(f"[{self.night}] job {label}: {job.ctx.status} in {job.seconds:.0f} s")
        return job

    def run_step(self, job: Job, n: int, step: dict[str, Any]) -> None:
        ctx = job.ctx
        name = interpolate(step.get("name") or step.get("uses") or step.get("run", "").split("\n")[0], ctx)
        if not should_run(step.get("if"), ctx):
            job.steps.append(StepResult(name, "skipped", 0.0))
            return
        log = self.logs / safe_name(job.name) / f"{n:02d}-{safe_name(name)[:50]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        say(f"[{self.night}] {job.name} step {n}: {name} (log: {log})")
        start = time.monotonic()
        try:
            if "uses" in step:
                ok = self.use(job, step, log)
            else:
                ok = self.shell(job, step, log)
        except CheckError as e:
            log.write_text(f"{e}\n")
            raise
        outcome = "success" if ok else "failure"
        if not ok and not step.get("continue-on-error"):
            ctx.status = "failure"
        if "id" in step:
            ctx.values["steps"].setdefault(step["id"], {"outputs": {}})["outcome"] = outcome
        secs = time.monotonic() - start
        job.steps.append(StepResult(name, outcome, secs))
        say(f"[{self.night}] {job.name} step {n}: {outcome} after {secs:.0f} s")

    def shell(self, job: Job, step: dict[str, Any], log: Path) -> bool:
        ctx = job.ctx
        script = interpolate(step["run"], ctx)
        tmp = job.root / RUNNER_TEMP.lstrip("/")
        (tmp / "step.sh").write_text(script + "\n")
        (tmp / "output").write_text("")
        wd = os.path.join(WORKSPACE, interpolate(step.get("working-directory", "."), ctx))
        cmd = ["bash", "-c", 'cd "$1" && exec bash -e "$2"', "step", wd, f"{RUNNER_TEMP}/step.sh"]
        env = {**(job.spec.get("env") or {}), **(step.get("env") or {})}
        rc = self.in_root(job, [*(f"{k}={interpolate(v, ctx)}" for k, v in env.items()), *cmd], log)
        if "id" in step:  # only a step with an id can be read back
            outputs = ctx.values["steps"].setdefault(step["id"], {"outputs": {}})["outputs"]
            outputs.update(line.split("=", 1) for line in (tmp / "output").read_text().splitlines() if "=" in line)
        summary = tmp / "summary"
        if summary.is_file():
            with open(self.logs / "step-summary.md", "a") as f:
                f.write(summary.read_text())
            summary.unlink()
        return rc == 0

    def in_root(self, job: Job, cmd: list[str], log: Path) -> int:
        """cmd chrooted in the job's root, output to `log`, a line of progress a
        minute, killed (with all it started) at the job's timeout."""
        with open(log, "a") as out:
            p = subprocess.Popen(
                ["bash", str(DEBROOT), "run", str(job.root), *job.env(), *cmd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            last = time.monotonic()
            try:
                return self._wait(job, p, log, out, last)
            except BaseException:  # interrupted: the step's whole session goes (its guests too)
                os.killpg(p.pid, 9)
                p.wait()
                raise

    def _wait(self, job: Job, p: subprocess.Popen, log: Path, out: Any, last: float) -> int:
        while p.poll() is None:
            time.sleep(2)
            if time.monotonic() > job.deadline:
                os.killpg(p.pid, 9)
                p.wait()
                out.write("\nnightly-check: the job's timeout-minutes ran out\n")
                job.ctx.status = "cancelled"
                return 124
            if time.monotonic() - last >= HEARTBEAT_S:
                last = time.monotonic()
                tail = log.read_text(errors="replace").rstrip().splitlines()[-1:] or [""]
                say(f"[{self.night}] {job.name}: still running: {tail[0][:120]}")
        return p.returncode

    def use(self, job: Job, step: dict[str, Any], log: Path) -> bool:
        action = str(step["uses"]).split("@")[0]
        if action not in ACTIONS:
            raise CheckError(f"no local stand-in for the action {action}; add a row to ACTIONS in {HERE}")
        inputs = {k: interpolate(v, job.ctx) for k, v in (step.get("with") or {}).items()}
        with open(log, "a") as out:
            return ACTIONS[action](self, job, step, inputs, out)
