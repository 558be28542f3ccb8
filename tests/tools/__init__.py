"""Tooling only the tests use: checkpatch.pl on rendered modules, a headless
browser's screenshot of a page."""

from pathlib import Path

# The repository the tests run from (harness.paths.CHECKOUT is None when the
# harness under test is an installed copy).
REPO = Path(__file__).resolve().parents[2]


def race_cli(kernel: str, cwd: Path, *args: str, timeout: float = 900):
    """`python -m harness race --kernel KERNEL ARGS... --json` run as a user
    would, from `cwd`: the process and its JSON report (None if none was written)."""
    import json
    import subprocess
    import sys

    out = cwd / "report.json"
    argv = [sys.executable, "-m", "harness", "race", "--kernel", kernel, "--json", str(out), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    return proc, json.loads(out.read_text()) if out.is_file() else None


def wait_until(condition, timeout: float, poll_s: float = 0.05) -> bool:
    """Whether `condition()` became true within `timeout` seconds: how a VM
    test waits for a state (a line seen, a file written, a process gone),
    never for a fixed time.  It looks every `poll_s` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def default_sigint() -> None:
    """A Popen preexec_fn: SIGINT as a shell gives a foreground job.  A test
    run launched in the background (`make test &`, nohup, some CI runners)
    hands its children an ignored SIGINT, and Python keeps it ignored, so a
    test that sends one would see nothing happen."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
