"""What is not GitHub's, as rows: the Debian root that stands in for each
runner (RUNNERS) and the local stand-in of each action (ACTIONS)."""

from __future__ import annotations

import fnmatch
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .common import PROJECT, RUNNER_TEMP, CheckError, copy_tree, lines

if TYPE_CHECKING:
    from .jobs import Job, Run

HERE = Path(__file__).relative_to(PROJECT)  # where a missing row is added

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
    "ubuntu-latest": Runner(
        "bookworm",
        "minbase",
        ("git", "python3", "python3-venv", "ca-certificates"),
        "ubuntu-latest (bookworm with git and python3)",
    ),
}


def runner_of(job: dict[str, Any]) -> Runner:
    container = job.get("container")
    image = container.get("image") if isinstance(container, dict) else container
    name = image or job.get("runs-on")
    if name not in RUNNERS:
        raise CheckError(f"no stand-in root for runner {name!r}; add a row to RUNNERS in {HERE}")
    return RUNNERS[name]


def artifact_root(paths: list[Path]) -> Path:
    """upload-artifact's layout: the paths relative to their least common ancestor."""
    parents = [p if p.is_dir() else p.parent for p in paths]
    return Path(os.path.commonpath([str(p) for p in parents]))


# The actions' stand-ins: (run, job, step, inputs, log) -> ok.


def act_checkout(run: Run, job: Job, step: dict, inputs: dict, log: Any) -> bool:
    ws = job.workspace
    subprocess.run(
        ["git", "clone", "-q", "--no-hardlinks", "--no-checkout", str(PROJECT), str(ws)],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    subprocess.run(
        ["git", "-C", str(ws), "checkout", "-q", "--detach", run.check.commit],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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
    rc = run.in_root(
        job,
        [
            "sh",
            "-c",
            f'python3 -c "import sys; v=sys.version.split()[0]; print(v); '
            f"sys.exit(not v.startswith('{want}'))\" && python3 -m venv {venv}",
        ],
        Path(log.name),
    )
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
