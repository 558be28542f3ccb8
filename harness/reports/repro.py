"""A run of a report as a folder that reproduces it without the harness:
the modules it brought, the static racer, the files its setup wrote and a
`repro.sh` with the exact command lines (its setup, then the racer roles
started together: the callers, the unload loop, the seed and the knobs are
all on those lines), and a README naming the kernel it needs.

On a guest of that kernel (busybox and kmod are enough), `sh repro.sh` runs
the race again; its output says what the kernel printed."""

from __future__ import annotations

import math
import shlex
import shutil
from pathlib import Path

from ..errors import HarnessError
from ..guest.programs import RACER_PATH
from ..race.outcomes import RaceReport, Replay, RunResult
from ..util import write_text

HANG_SLACK_S = 60  # as the engine: a role this late is hung
SPLAT_RE = r"BUG:|WARNING:|Oops|KASAN:|general protection|Unable to handle|refcount_t:|circular locking"


def pick_run(report: RaceReport, index: int | None) -> RunResult:
    """The run to export: `index` (1-based), else the first that splatted, else the first."""
    runs = report.runs
    if not runs:
        raise HarnessError("the report has no runs to export")
    if index is not None:
        if not 1 <= index <= len(runs):
            raise HarnessError(f"--run {index}: the report has runs 1..{len(runs)}")
        return runs[index - 1]
    return next((r for r in runs if r.splats), runs[0])


def _script(report: RaceReport, run: RunResult, replay: Replay) -> str:
    q = shlex.quote
    first = run.splats[0].title if run.splats else "no splat"
    lines = [
        "#!/bin/sh",
        f"# {run.scheme}/{run.workload} on {report.kernel_spec} ({replay.release}), seed {report.seed}:",
        f"# {run.verdict.value}; first splat: {first}",
        "# Run as root on a guest of that kernel: sh repro.sh",
        'here=$(cd "$(dirname "$0")" && pwd)',
        f"release={q(replay.release)}",
        'if [ "$(uname -r)" != "$release" ]; then',
        '\techo "repro.sh: needs kernel $release, this one is $(uname -r)" >&2',
        "\texit 2",
        "fi",
        "set -e",
        "# The racer, static: any guest of the kernel runs it.",
        f'mkdir -p {q(str(Path(RACER_PATH).parent))} && cp "$here/racer" {q(RACER_PATH)} && chmod 0755 {q(RACER_PATH)}',
    ]
    if replay.modules:
        lines += [
            "# The run's own modules, where modprobe finds them.",
            'mkdir -p "/lib/modules/$release/extra"',
            'cp "$here"/modules/*.ko "/lib/modules/$release/extra/"',
            "depmod -a",
        ]
    if replay.files:
        lines.append("# The files its setup wrote.")
        for i, (dest, _) in enumerate(replay.files):
            lines.append(f'mkdir -p {q(str(Path(dest).parent))} && cp "$here/files/{i}" {q(dest)}')
    if replay.setup:
        lines.append("# Its setup, as the harness ran it.")
        lines += list(replay.setup)
    lines += [
        "# The racer's roles, started together: they meet at the barrier.",
        f"rm -f {q(replay.barrier)}" if replay.barrier else ":",
        "set +e",
        "out=$(mktemp -d /tmp/repro.XXXXXX)",
        "dmesg -c >/dev/null 2>&1 || true",
    ]
    for i, role in enumerate(replay.roles):
        lines += [f'{role} >"$out/role{i}.json" 2>"$out/role{i}.err" &', 'pids="$pids $!"']
    limit = math.ceil(report.duration_s) + HANG_SLACK_S
    lines += [
        f"# At most the race's length and {HANG_SLACK_S} s: a role stuck in the kernel after a crash never ends.",
        "alive() { for p in $pids; do kill -0 $p 2>/dev/null && return 0; done; return 1; }",
        "t=0",
        f"while alive && [ $t -lt {limit} ]; do sleep 1; t=$((t + 1)); done",
        'alive && echo "repro.sh: a role still runs after ${t}s (stuck after a crash?)"',
        'echo "repro.sh: the roles are done; their JSON is in $out"',
        f"if dmesg | grep -E -q {q(SPLAT_RE)}; then",
        "\techo 'repro.sh: the kernel splatted:'",
        f"\tdmesg | grep -E -A2 {q(SPLAT_RE)} | head -40",
        "\texit 1",
        "fi",
        "echo 'repro.sh: no splat this time'",
        "",
    ]
    return "\n".join(lines)


def _readme(report: RaceReport, run: RunResult, replay: Replay) -> str:
    splats = "".join(f"- {s.kind.value}: {s.title}\n" for s in run.splats) or "- none\n"
    return (
        f"# Reproducer: {run.scheme}/{run.workload}\n\n"
        f"Kernel: `{report.kernel_spec}`, `uname -r` {replay.release} ({report.kernel_describe or 'as raced'}).\n"
        f"Seed {report.seed}, {report.duration_s:g} s, reload {report.reload}; "
        f"verdict `{run.verdict.value}`. What the console showed:\n\n{splats}\n"
        "On a guest of that kernel, as root, with this folder copied in:\n\n    sh repro.sh\n\n"
        "It installs the static `racer`, the run's modules under `extra/` (then `depmod -a`) and the files\n"
        "its setup wrote, runs that setup, then starts the racer's roles together (the callers and the unload\n"
        "loop; their seed, knobs and pacing are on their command lines), waits, and prints what the kernel\n"
        "printed: exit 1 if it splatted, 0 if not, 2 on the wrong kernel. Races are timing: one round may\n"
        "not show it; run it again.\n\n"
        f"The same race with the harness:\n\n    {run.repro}\n"
    )


def check_folder(folder: Path) -> None:
    """An export goes into a new or empty folder: nothing of the user's is overwritten."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise HarnessError(f"{folder}: exists and is not an empty folder; give a new one")


def export(report: RaceReport, run: RunResult, folder: Path, racer: Path) -> Path:
    """Write the reproducer of `run` into `folder` (new, or empty); its repro.sh."""
    replay = run.replay
    if replay is None:
        raise HarnessError(f"run {run.scheme}/{run.workload} has no replay (a report older than export); race it again")
    check_folder(folder)
    missing = [m for m in replay.modules if not Path(m).is_file()]
    if missing:
        raise HarnessError(
            f"the run's module {missing[0]} is gone from the cache (pruned?); race it again, then export"
        )
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(racer, folder / "racer")
    if replay.modules:
        (folder / "modules").mkdir()
        for m in replay.modules:
            shutil.copy2(m, folder / "modules" / Path(m).name)
    if replay.files:
        (folder / "files").mkdir()
        for i, (_, text) in enumerate(replay.files):
            write_text(folder / "files" / str(i), text)
    script = folder / "repro.sh"
    write_text(script, _script(report, run, replay))
    script.chmod(0o755)
    write_text(folder / "README.md", _readme(report, run, replay))
    return script
