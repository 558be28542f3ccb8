"""`python -m harness run` end to end: argv exactness, exit statuses, teardown."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

from harness.exitcodes import ExitStatus
from tests.tools import REPO, wait_until


class Run:
    """`python -m harness run` in the background, its stderr read line by line."""

    def __init__(self, kernel, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--kernel", kernel.name, *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err_lines: list[str] = []
        self.ready_at: float | None = None
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            m = re.search(r"ssh on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "vm: ready" in line:
                self.ready_at = time.monotonic()
            self.err_lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 180) -> None:
        wait_until(lambda: self.ready_at is not None or self.proc.poll() is not None, timeout)
        assert self.ready_at is not None, "\n".join(self.err_lines)

    def wait_line(self, text: str, timeout: float = 60) -> None:
        seen = wait_until(lambda: any(text in ln for ln in self.err_lines) or self.proc.poll() is not None, timeout)
        assert seen, f"no {text!r} on stderr:\n" + "\n".join(self.err_lines)

    def finish(self, timeout: float = 300) -> tuple[int, str, list[str]]:
        out = self.proc.stdout.read()
        rc = self.proc.wait(timeout)
        self._reader.join(5)
        return rc, out, self.err_lines

    def errors(self) -> list[str]:
        return [ln for ln in self.err_lines if ln.startswith(("error:", "interrupted"))]

    def qemu_left(self) -> list[str]:
        assert self.port is not None
        out = subprocess.run(["pgrep", "-f", f"hostfwd=tcp:127.0.0.1:{self.port}-"], capture_output=True, text=True)
        return out.stdout.split()


def test_several_arguments_are_an_exact_argv(kernel):
    run = Run(kernel, "--", "printf", "%s|", "a;uname", "$HOME", "", "it's")
    rc, out, _ = run.finish()
    assert (rc, out) == (0, "a;uname|$HOME||it's|")
    assert run.qemu_left() == []


def test_the_commands_exit_status_is_the_exit_status(kernel):
    rc, out, err = Run(kernel, "--", "sh", "-c", "echo out; exit 7").finish()
    assert (rc, out) == (7, "out\n"), err


def test_one_argument_is_a_shell_command_line(kernel):
    rc, out, err = Run(kernel, "--", "echo a; echo b >&2; uname -r; exit 3").finish()
    assert (rc, out) == (3, f"a\n{kernel.release}\n")
    assert "b" in err


def test_timeout_tears_the_guest_down(kernel):
    run = Run(kernel, "--timeout", "2", "--", "sleep", "100")
    run.wait_ready()
    rc, _, err = run.finish()
    after_ready = time.monotonic() - run.ready_at
    assert rc == ExitStatus.TIMEOUT == 124, err
    assert run.errors() == ["error: the command did not finish within 2 s; guest torn down"]
    assert after_ready < 2 + 8, f"{after_ready:.1f}s from ready to exit"
    assert run.qemu_left() == []


def test_guest_death_has_its_own_status(kernel):
    run = Run(kernel, "--", "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger")
    rc, _, err = run.finish()
    assert rc == ExitStatus.GUEST_DIED == 255, err
    [line] = run.errors()
    assert re.fullmatch(r"error: the guest died during the command \(.*sysrq.*\); console log: \S+\.log", line), line
    assert run.qemu_left() == []


def test_sigterm_tears_down_like_ctrl_c(kernel):
    run = Run(kernel, "--", "sh", "-c", "echo command-started >&2; exec sleep 60")
    run.wait_ready()
    run.wait_line("command-started")
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    rc, _, err = run.finish(timeout=30)
    assert rc == ExitStatus.TERMINATED == 143, err
    assert run.errors() == ["interrupted; guest torn down"]
    assert time.monotonic() - t0 < 10
    assert run.qemu_left() == []
