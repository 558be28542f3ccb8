"""make nightly-check: the nightly workflow (.github/workflows/nightly.yml) run
for one kernel as GitHub's runner would, in clean Debian roots, on two nights.

Each job's steps are read from the workflow itself and run chrooted in a fresh
copy of a Debian root that stands in for its runner (RUNNERS), with the
`${{ }}` expressions, `if:` conditions and job timeouts evaluated as Actions
does, and each `uses:` action replaced by a local stand-in (ACTIONS): the
checkout clones the committed HEAD, the caches and artifacts are folders under
the check's cache and build folders.  Then:

  night 1  the kernel's job (an empty harness cache the first time), the page job
  night 2  the same again: its harness cache restored by exact key, so nothing
           is downloaded or built; the page compared with night 1's: no change
  planted  the page job again, its previous night being night 1's page with one
           cell edited (a claim flipped): the change heads the page, the job fails

and says what it saw, with the two nights' job times, in
build/nightly-check/STAMP/summary.txt.  Exit 0 when every check held, 1 if one
did not, 2 on bad input.  Needs root (mmdebstrap, chroot) like make host-check.

  .venv/bin/python scripts/nightly_check.py --kernel 6.1 [--cold]
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

PROJECT = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT / ".github" / "workflows" / "nightly.yml"
DEBROOT = PROJECT / "scripts" / "lib" / "debroot.sh"
CACHE = Path(os.environ.get("HARNESS_CACHE", PROJECT / ".cache")) / "nightly-check"
BUILD = Path(os.environ.get("HARNESS_BUILD", PROJECT / "build")) / "nightly-check"
# Where a container job's workspace and temp folder are on GitHub's runners.
WORKSPACE = "/__w/harness/harness"
RUNNER_TEMP = "/__w/_temp"
HEARTBEAT_S = 60


class CheckError(Exception):
    """Bad input or a broken stand-in: one line, exit 2."""


def say(msg: str) -> None:
    print(f"nightly-check: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Expressions: ${{ ... }}, if:, timeout-minutes.  The subset the workflows use:
# literals, context paths, == != ! && || ( ), always() success() failure()
# cancelled() hashFiles(...).

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||[!(),])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-*]+)*))")


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos, expr = [], 0, expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise CheckError(f"expression {expr!r}: cannot read {expr[pos:]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


@dataclass
class Context:
    values: dict[str, Any]  # matrix, steps, github, runner, env
    status: str = "success"  # the job's so far: success | failure | cancelled
    hash_files: Callable[[list[str]], str] = lambda patterns: ""

    def lookup(self, path: str) -> Any:
        node: Any = self.values
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node


def truthy(v: Any) -> bool:
    return v not in (None, False, 0, "", 0.0)


def evaluate(expr: str, ctx: Context) -> Any:
    toks, i = _tokens(expr), 0

    def peek() -> str:
        return toks[i][1] if i < len(toks) else ""

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise CheckError(f"expression {expr!r} ends early")
        i += 1
        return toks[i - 1]

    def or_() -> Any:
        v = and_()
        while peek() == "||":
            take()
            rhs = and_()
            v = v if truthy(v) else rhs
        return v

    def and_() -> Any:
        v = cmp()
        while peek() == "&&":
            take()
            rhs = cmp()
            v = rhs if truthy(v) else v
        return v

    def cmp() -> Any:
        v = unary()
        while peek() in ("==", "!="):
            op = take()[1]
            rhs = unary()
            same = (str(v).lower() == str(rhs).lower()) if isinstance(v, str) and isinstance(rhs, str) else v == rhs
            v = same if op == "==" else not same
        return v

    def unary() -> Any:
        if peek() == "!":
            take()
            return not truthy(unary())
        return atom()

    def atom() -> Any:
        kind, text = take()
        if text == "(":
            v = or_()
            if take()[1] != ")":
                raise CheckError(f"expression {expr!r}: ')' expected")
            return v
        if kind == "str":
            return text[1:-1].replace("''", "'")
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "name" and text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[text]
        if kind == "name" and peek() == "(":
            take()
            args = []
            while peek() != ")":
                args.append(or_())
                if peek() == ",":
                    take()
            take()
            return call(text, args)
        if kind == "name":
            return ctx.lookup(text)
        raise CheckError(f"expression {expr!r}: unexpected {text!r}")

    def call(name: str, args: list[Any]) -> Any:
        status = {"always": lambda: True, "success": lambda: ctx.status == "success",
                  "failure": lambda: ctx.status == "failure", "cancelled": lambda: ctx.status == "cancelled"}
        if name in status:
            return status[name]()
        if name == "hashFiles":
            return ctx.hash_files([str(a) for a in args])
        if name == "fromJSON" and len(args) == 1:
            return json.loads(str(args[0]))
        raise CheckError(f"expression {expr!r}: no stand-in for {name}()")

    v = or_()
    if i != len(toks):
        raise CheckError(f"expression {expr!r}: unexpected {peek()!r}")
    return v


_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def interpolate(text: Any, ctx: Context) -> str:
    def one(m: re.Match[str]) -> str:
        v = evaluate(m.group(1), ctx)
        return "" if v is None else ("true" if v is True else "false" if v is False else str(v))
    return _EXPR.sub(one, str(text))


def value_of(field_: Any, ctx: Context) -> Any:
    """A field that is one whole ${{ }} keeps its type (timeout-minutes)."""
    if isinstance(field_, str):
        m = _EXPR.fullmatch(field_.strip())
        if m:
            return evaluate(m.group(1), ctx)
        return interpolate(field_, ctx)
    return field_


def should_run(cond: Any, ctx: Context) -> bool:
    """A step's `if:`; without a status function Actions adds success() &&."""
    if cond is None:
        return ctx.status == "success"
    text = str(cond).strip()
    m = _EXPR.fullmatch(text)
    if m:
        text = m.group(1)
    if not re.search(r"\b(always|success|failure|cancelled)\s*\(", text):
        text = f"success() && ({text})"
    return truthy(evaluate(text, ctx))


def artifact_root(paths: list[Path]) -> Path:
    """upload-artifact's layout: the paths relative to their least common ancestor."""
    parents = [p if p.is_dir() else p.parent for p in paths]
    return Path(os.path.commonpath([str(p) for p in parents]))


# ---------------------------------------------------------------------------
# Runners: the Debian root that stands in for each runs-on / container, and what
# that image has before the first step.

@dataclass(frozen=True)
class Runner:
    suite: str
    variant: str
    packages: tuple[str, ...]
    note: str


RUNNERS = {
    # The claims job's container image: Debian's minimal base.
    "debian:bookworm": Runner("bookworm", "minbase", (), "debian:bookworm (minbase)"),
    # GitHub's Ubuntu image has git and a Python; a bookworm root with them stands
    # in (setup-python then asks for 3.11, which bookworm has).
    "ubuntu-latest": Runner("bookworm", "minbase", ("git", "python3", "python3-venv", "ca-certificates"),
                            "ubuntu-latest (bookworm with git and python3)"),
}


def runner_of(job: dict[str, Any]) -> Runner:
    container = job.get("container")
    image = container.get("image") if isinstance(container, dict) else container
    name = image or job.get("runs-on")
    if name not in RUNNERS:
        raise CheckError(f"no stand-in root for runner {name!r}; add a row to RUNNERS in {Path(__file__).name}")
    return RUNNERS[name]


# ---------------------------------------------------------------------------
# One run of the workflow: its jobs, steps and the actions' stand-ins.

@dataclass
class Store:
    """actions/cache's entries, kept between runs like GitHub's cache."""
    root: Path

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for meta in self.root.glob("*/meta.json"):
            out.append(json.loads(meta.read_text()))
        return sorted(out, key=lambda e: e["saved"], reverse=True)

    def find(self, key: str, restore_keys: list[str]) -> tuple[str | None, bool]:
        keys = [e["key"] for e in self.entries()]
        if key in keys:
            return key, True
        for prefix in restore_keys:
            hit = next((k for k in keys if k.startswith(prefix)), None)
            if hit:
                return hit, False
        return None, False

    def folder(self, key: str) -> Path:
        return self.root / safe_name(key)

    def save(self, key: str, paths: dict[str, Path], saved: float | None = None) -> bool:
        """Save each of `paths` (the workflow's path -> where it is here) under
        `key`; `restore` puts each back at its path."""
        dest = self.folder(key)
        if (dest / "meta.json").is_file():
            return False  # GitHub's cache keys are immutable
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path, src in paths.items():
            copy_tree(src, tmp / "data" / path)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "saved": saved or time.time()}))
        tmp.rename(dest)
        return True

    def restore(self, key: str, paths: dict[str, Path]) -> None:
        for path, dest in paths.items():
            src = self.folder(key) / "data" / path
            if src.exists():
                copy_tree(src, dest)

    def drop(self, prefix: str) -> None:
        for e in self.entries():
            if e["key"].startswith(prefix):
                shutil.rmtree(self.folder(e["key"]))


def copy_tree(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        dest.mkdir(exist_ok=True)
        subprocess.run(["cp", "-a", "--reflink=auto", f"{src}/.", str(dest)], check=True)
    else:
        subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True)


def safe_name(text: str) -> str:
    """A key or job label as one file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def lines(v: Any) -> list[str]:
    return [x.strip() for x in str(v or "").splitlines() if x.strip()]


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
        return {(f"{sub}/{x.name}", x.stat().st_mtime_ns) for sub in ("debs", "kernels", "buildroots")
                if (cache / sub).is_dir() for x in (cache / sub).iterdir() if not x.name.endswith(".lock")}

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
        out = [f"PATH={path}", "GITHUB_ACTIONS=true", f"GITHUB_RUN_ID={self.run.run_id}",
               f"GITHUB_WORKSPACE={WORKSPACE}", f"RUNNER_TEMP={RUNNER_TEMP}",
               f"GITHUB_OUTPUT={RUNNER_TEMP}/output", f"GITHUB_STEP_SUMMARY={RUNNER_TEMP}/summary"]
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
        job.ctx = Context({"matrix": matrix, "steps": {}, "github": {"run_id": str(self.run_id),
                                                                      "workspace": WORKSPACE},
                           "runner": {"temp": RUNNER_TEMP}}, hash_files=job.hash_files)
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
        log = self.logs / safe_name(job.name) / f"{n:02d}-{re.sub(r'[^A-Za-z0-9]+', '-', name)[:50]}.log"
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
            p = subprocess.Popen(["bash", str(DEBROOT), "run", str(job.root), *job.env(), *cmd],
                                 stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
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
            raise CheckError(f"no local stand-in for the action {action}; add a row to ACTIONS in "
                             f"{Path(__file__).name}")
        inputs = {k: interpolate(v, job.ctx) for k, v in (step.get("with") or {}).items()}
        with open(log, "a") as out:
            return ACTIONS[action](self, job, step, inputs, out)


# The actions' stand-ins: (run, job, step, inputs, log) -> ok.

def act_checkout(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    ws = job.workspace
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", "--no-checkout", str(PROJECT), str(ws)],
                   check=True, stdout=log, stderr=subprocess.STDOUT)
    subprocess.run(["git", "-C", str(ws), "checkout", "-q", "--detach", run.check.commit],
                   check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"checked out {run.check.commit[:12]} (the committed HEAD)", file=log)
    return True


def _restore(run: Run, job: Job, inputs: dict, log: Any) -> tuple[str, bool]:
    key = inputs["key"]
    hit, exact = run.check.store.find(key, lines(inputs.get("restore-keys")))
    job.cache_hits[key] = "exact" if exact else "partial" if hit else "miss"
    if hit:
        run.check.store.restore(hit, {p: job.host(p) for p in lines(inputs["path"])})
        print(f"cache restored from key {hit} ({'exact' if exact else 'a restore key'})", file=log)
    else:
        print(f"cache not found for key {key}", file=log)
    return key, exact


def _save(run: Run, job: Job, key: str, paths: list[str], log: Any) -> None:
    for p in paths:
        src = job.host(p)
        if not src.exists():
            print(f"cache not saved: {p} does not exist", file=log)
            return
    saved = run.check.store.save(key, {p: job.host(p) for p in paths})
    print(f"cache {'saved' if saved else 'already exists'} under key {key}", file=log)


def act_cache(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    key, exact = _restore(run, job, inputs, log)
    if "id" in step:
        job.ctx.values["steps"].setdefault(step["id"], {"outputs": {}})["outputs"]["cache-hit"] = str(exact).lower()

    def post() -> None:  # actions/cache's post step: saved when the job succeeded and the key missed
        if job.ctx.status == "success" and not exact:
            with open(log.name, "a") as out:
                _save(run, job, key, lines(inputs["path"]), out)
    job.post.append(post)
    return True


def act_cache_restore(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    _restore(run, job, inputs, log)
    return True


def act_cache_save(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    _save(run, job, inputs["key"], lines(inputs["path"]), log)
    return True


def act_upload(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    found = [job.host(p.rstrip("/")) for p in lines(inputs["path"])]
    found = [p for p in found if p.exists()]
    if not found:
        print(f"no files found for {inputs['path']!r}", file=log)
        return inputs.get("if-no-files-found", "warn") != "error"
    base = artifact_root(found)
    dest = run.artifacts / inputs.get("name", "artifact")
    for p in found:
        copy_tree(p, dest / p.relative_to(base))
    print(f"artifact {dest.name}: {', '.join(str(p.relative_to(base)) for p in found)}", file=log)
    return True


def act_download(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    dest = job.host(inputs.get("path", "."))
    names = sorted(a.name for a in run.artifacts.iterdir()) if run.artifacts.is_dir() else []
    if "name" in inputs:
        chosen, nested = [n for n in names if n == inputs["name"]], False
    else:
        chosen, nested = [n for n in names if fnmatch.fnmatch(n, inputs.get("pattern", "*"))], True
    for n in chosen:
        copy_tree(run.artifacts / n, dest / n if nested else dest)
    print(f"downloaded {', '.join(chosen) or 'nothing'} to {inputs.get('path', '.')}", file=log)
    return bool(chosen) or "pattern" in inputs


def act_setup_python(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    want = inputs.get("python-version", "")
    venv = f"{RUNNER_TEMP}/python"
    rc = run.in_root(job, ["sh", "-c", f'python3 -c "import sys; v=sys.version.split()[0]; print(v); '
                                       f'sys.exit(not v.startswith(\'{want}\'))" && python3 -m venv {venv}'],
                     Path(log.name))
    if rc == 0:
        job.path_prepend.insert(0, f"{venv}/bin")
    return rc == 0


ACTIONS: dict[str, Callable[[Run, Job, dict, dict, Any], bool]] = {
    "actions/checkout": act_checkout,
    "actions/cache": act_cache,
    "actions/cache/restore": act_cache_restore,
    "actions/cache/save": act_cache_save,
    "actions/upload-artifact": act_upload,
    "actions/download-artifact": act_download,
    "actions/setup-python": act_setup_python,
}


def debroot(*args: str) -> None:
    r = subprocess.run(["bash", str(DEBROOT), *args], cwd=PROJECT)
    if r.returncode != 0:
        raise CheckError(f"scripts/lib/debroot.sh {args[0]} {args[1]} failed (exit {r.returncode}; see above)")


# ---------------------------------------------------------------------------

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
        self.commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"], check=True,
                                     capture_output=True, text=True).stdout.strip()
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
        say(f"replaying {WORKFLOW.relative_to(PROJECT)} for kernel {self.kernel} at {self.commit[:12]}; "
            f"logs in {self.logs}")
        r1, c1, p1 = self.night("night1", 1)
        r2, c2, p2 = self.night("night2", 2)
        fresh = sorted(name for name, _ in c2.harness_cache - c1.harness_cache)
        for night, c, p in (("night 1", c1, p1), ("night 2", c2, p2)):
            self.verdict(f"{night}: the {self.kernel} job passes", c.ctx.status == "success",
                         ", ".join(f"{s.name}: {s.outcome}" for s in c.steps if s.outcome != "skipped"))
            self.verdict(f"{night}: the page job passes", p.ctx.status == "success", p.ctx.status)
        key_hits = list(c2.cache_hits.values())
        self.verdict("night 2: the harness cache is restored by its exact key", key_hits == ["exact"],
                     f"cache hits {key_hits}")
        self.verdict("night 2: nothing new downloaded or built", not fresh,
                     f"the same {len(c2.harness_cache)} .debs, kernel trees and build roots as night 1"
                     if not fresh else f"new or remade: {', '.join(fresh[:5])}")
        s1, s2 = self.summary(p1), self.summary(p2)
        self.verdict("night 1's page: no previous night", "No previous night to compare with" in s1,
                     s1.splitlines()[2] if len(s1.splitlines()) > 2 else s1)
        self.verdict("night 2's page: no change since night 1", "No change:" in s2,
                     s2.splitlines()[2] if len(s2.splitlines()) > 2 else s2)
        self.planted(r2)
        return self.report(c1, c2)

    def planted(self, tonight: Run) -> None:
        """Night 2's page job again, its previous night being night 1's page with
        one claim's cell flipped."""
        kept = next(lines(st["with"]["path"])[0] for st in self.workflow["jobs"]["page"]["steps"]
                    if str(st.get("uses", "")).startswith("actions/cache/save"))  # nights/previous
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
        self.verdict("planted: the page job fails on the flipped claim",
                     merge is not None and merge.outcome == "failure", f"merge step: {merge.outcome if merge else '?'}")
        rows = self.summary(page).splitlines()
        head = next((rows[i + 1] for i, x in enumerate(rows[:-1]) if x.startswith("|---")), "")
        self.verdict("planted: the flip heads the page's summary",
                     head.startswith("| Claim flipped |") and f"| {self.kernel} |" in head and target in head,
                     head or "no table of changes")
        html = run.artifacts / "nightly-page" / "index.html"
        body = html.read_text() if html.is_file() else ""
        changes = body.find('<table class="changes"')
        self.verdict("planted: the page shows the change above the grid",
                     changes >= 0 and body.find("<table") == changes and "change-claim" in body
                     and target in body[changes:body.find("</table>", changes)],
                     str(html) if body else "no nightly-page artifact")

    def report(self, c1: Job, c2: Job) -> int:
        def mmss(s: float) -> str:
            return f"{int(s) // 60}m{int(s) % 60:02d}s"
        out = [f"nightly-check {self.logs.name}: {WORKFLOW.relative_to(PROJECT)}, kernel {self.kernel}, "
               f"commit {self.commit[:12]}",
               f"claims job {self.kernel}: night 1 {mmss(c1.seconds)} (harness cache: "
               f"{', '.join(c1.cache_hits.values())}), night 2 {mmss(c2.seconds)} "
               f"(harness cache: {', '.join(c2.cache_hits.values())})", ""]
        out += [f"{'ok    ' if v.held else 'NOT OK'} {v.what}: {v.detail}" for v in self.verdicts]
        text = "\n".join(out) + "\n"
        (self.logs / "summary.txt").write_text(text)
        print(text, end="")
        say(f"summary in {self.logs / 'summary.txt'}")
        return 0 if all(v.held for v in self.verdicts) else 1


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    p = argparse.ArgumentParser(prog="scripts/nightly_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--kernel", default="6.1", help="one kernel of the nightly matrix (default 6.1)")
    p.add_argument("--cold", action="store_true", help="forget the kept caches first: night 1 starts empty")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("nightly-check: error: needs root (mmdebstrap, chroot); run it as root", file=sys.stderr)
        return 2
    try:
        return Check(args.kernel, args.cold).main()
    except CheckError as e:
        print(f"nightly-check: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nightly-check: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
