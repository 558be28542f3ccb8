"""gdb on a running guest (`--gdb`): the stub started through QEMU's monitor,
the kernel's symbols from the guest's kallsyms, a module's from its .ko at
its load addresses; gdb in batch mode stops where a racer's call goes."""

from __future__ import annotations

import re
import subprocess
import time

from harness.guest import gdb
from harness.race import ops
from harness.race.racer import parse_role_output


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float) -> str:
    """gdb's output until a line matches (a state, not a sleep)."""
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return "".join(seen)
    raise AssertionError(f"gdb never printed {pattern!r}:\n{''.join(seen)}")


def test_gdb_reads_a_kernel_variable_and_stops_in_a_module_function_a_racer_calls(vm):
    vm.ssh.run("modprobe dummy", check=True)
    setup = gdb.start(vm)
    assert f"target remote 127.0.0.1:{setup.port}" in setup.script.read_text()
    jiffies = int(vm.ssh.run("awk '/ jiffies_64$/ {print $1}' /proc/kallsyms", check=True).stdout, 16)
    # dummy_setup: the link kind's setup, which RTM_NEWLINK of a dummy link calls.
    argv = [
        "gdb",
        "-q",
        "-batch",
        "-x",
        str(setup.script),
        "-ex",
        "p/x &jiffies_64",
        "-ex",
        "p *(unsigned long *)&jiffies_64",
        "-ex",
        "break dummy_setup",
        "-ex",
        "echo READY\\n",
        "-ex",
        "continue",
        "-ex",
        "info symbol $pc",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        before = _read_until(proc, r"^READY", 120)
        assert f"$1 = {jiffies:#x}" in before, before
        value = re.search(r"^\$2 = (\d+)", before, re.M)
        assert value and int(value[1]) > 0, before  # jiffies count up from boot
        assert re.search(r"Breakpoint 1 at 0x[0-9a-f]+", before), before
        # The guest runs on while gdb waits: a racer's netdev-add call hits it.
        op = ops.parse("netdev-add:dummy:hold=0")
        call = vm.ssh.start(op.role_spec(name="dummy", count=1).command())
        after = _read_until(proc, r"in section \.text of .*dummy\.ko", 120)
        assert re.search(r"Breakpoint 1, 0x[0-9a-f]+ in dummy_setup \(\)", after), after
        assert "dummy_setup in section .text" in after, after
        proc.wait(60)  # batch mode ends: gdb detaches and the guest goes on
        res = call.wait(120)
        caller = parse_role_output(res.stdout, exit_status=res.exit_status, stderr=res.stderr)
        assert caller.error is None and caller.ops["netdev-add"].ok == 1, (caller.error, caller.ops)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert vm.ssh.run("true").ok, "the guest runs on after gdb detached"
