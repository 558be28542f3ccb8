"""Front-end errors are one clear line and a non-zero exit, never a traceback."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from harness import cli
from harness.cli import guest as guest_cli
from harness.errors import HarnessError
from harness.exitcodes import ExitStatus
from harness.guest.ssh import command_line
from tests.tools import REPO


def _run(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True, timeout=60, env=env
    )


def test_unknown_kernel_lists_the_valid_ones():
    res = _run("run", "--kernel", "9.9", "--", "true")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: unknown kernel spec '9.9'; valid: 5.10, 5.10-rt, 6.1, 6.1-rt, 6.12, 6.12-rt, sid, sid-rt, rc, "
        "6.12-debug, 6.1-debug, sid-debug, all, or the PATH of a kernel build tree or installed root"
    ]


def test_missing_qemu_names_the_package(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))
    res = _run("run", "--", "true", env=env)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: qemu-system-x86_64 not found; install it with: apt-get install qemu-system-x86"
    ]


def test_run_without_a_command():
    res = _run("run", "--kernel", "9.9")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_bad_option_is_usage_error():
    res = _run("run", "--accel", "warp", "--", "true")
    assert res.returncode == 2 and "invalid choice" in res.stderr and "Traceback" not in res.stderr


def test_usage_errors_are_one_line():
    res = _run("run", "--cpus", "0", "--", "true")
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "error: argument --cpus: 0 is out of range (from 1 to 255) (see python -m harness run --help)"
    ]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["echo c > /proc/sysrq-trigger"], "echo c > /proc/sysrq-trigger"),
        (["sh", "-c", "exit 7"], "sh -c 'exit 7'"),
        (["echo", "a;uname"], "echo 'a;uname'"),
        (["printf", "%s\\n", "", "$HOME", "it's"], "printf '%s\\n' '' '$HOME' 'it'\"'\"'s'"),
    ],
)
def test_command_line_one_argument_is_shell_several_are_argv(argv, line):
    assert command_line(argv) == line
    if len(argv) > 1:
        assert shlex.split(command_line(argv)) == argv


def test_command_line_needs_a_command():
    with pytest.raises(HarnessError):
        command_line([])


def test_exit_statuses_are_distinct_and_follow_conventions():
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 124, 130, 143, 255]
    assert HarnessError.exit_code == ExitStatus.BAD_INPUT
    assert ExitStatus.INTERRUPTED == 128 + signal.SIGINT and ExitStatus.TERMINATED == 128 + signal.SIGTERM


def test_sigterm_is_reported_like_ctrl_c(monkeypatch, capsys):
    def handler(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(cli, "cmd_kernels", handler)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["kernels"]) == ExitStatus.TERMINATED == 143
    assert capsys.readouterr().err.splitlines() == ["interrupted; guest torn down"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def handler(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_kernels", handler)
    assert cli.main(["kernels"]) == ExitStatus.INTERRUPTED == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted; guest torn down"]


def test_run_names_boot_splats_apart_from_the_commands(capsys, tmp_path):
    from types import SimpleNamespace

    from harness.guest.splat import parse

    boot = "[    0.9] WARNING: CPU: 0 PID: 0 at kernel/x.c:1 early_thing+0x1/0x2\n"
    used = "[   20.0] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    log = tmp_path / "console.log"
    log.write_text(boot + "HARNESS-GUEST-READY\n" + used)
    vm = SimpleNamespace(
        boot_splats=tuple(parse(boot)),
        console_text=log.read_text,
        ready_offset=len(boot) + len("HARNESS-GUEST-READY\n"),
        log_path=log,
    )
    guest_cli.report_splats(vm)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "boot: warning: WARNING in early_thing (the guest was broken before the command began)",
        "console: bug: BUG: kernel NULL pointer dereference, address: ADDR",
        f"console log: {log}",
    ]


def test_cachekey_prints_the_key_and_explains_on_stderr(monkeypatch, capsys):
    from harness.kernels import apt
    from harness.kernels.apt import Package, ResolvedKernel, Role

    def resolve(row):
        abi = "6.1.0-57-amd64"
        return ResolvedKernel(
            row, abi, "6.1.192-3", (Package(f"linux-image-{abi}", "6.1.192-3", "amd64", 1, "ab" * 32, Role.IMAGE),)
        )

    monkeypatch.setattr(apt, "resolve", resolve)
    assert cli.main(["cachekey", "6.1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("harness-6.1-") and out.count("\n") == 1 and not err
    assert cli.main(["cachekey", "6.1", "--explain"]) == 0
    out2, err = capsys.readouterr()
    assert out2 == out and '"abi": "6.1.0-57-amd64"' in err


def test_cachekey_of_an_unknown_spec_is_one_line():
    res = _run("cachekey", "9.9")
    assert res.returncode == 2 and not res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error: unknown kernel spec '9.9'")


def test_every_command_the_workflows_and_make_run_is_a_subcommand():
    """The one command line: no `python -m harness.x.y` of a stage module, and
    every `python -m harness X` the workflows, the Makefile and the docs show
    is a command `python -m harness --help` lists."""
    commands = set(next(a for a in cli.parser()._actions if a.dest == "cmd").choices)
    texts = {
        p: p.read_text()
        for p in [
            *(REPO / ".github" / "workflows").glob("*.yml"),
            REPO / "Makefile",
            REPO / "README.md",
            *(REPO / "docs").glob("*.md"),
        ]
    }
    used = {
        (p.name, m)
        for p, text in texts.items()
        for m in re.findall(r"python -m harness (\S+)", text)
        if not m.startswith(("-", "..."))
    }
    assert {name for _, name in used} >= {"cachekey", "nightly", "race", "survey"}
    assert [(f, m) for f, m in used if m not in commands] == []
    assert [p.name for p, text in texts.items() if re.search(r"python -m harness\.\w", text)] == []
    help_text = subprocess.run(
        [sys.executable, "-m", "harness", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    ).stdout
    assert all(f"    {c}" in help_text for c in commands)
