"""The guest over SSH: commands with exit status, concurrent channels, uploads.

One paramiko transport per guest, one channel per command, so several roles
run at once on one connection.  TCP_NODELAY because Nagle's algorithm costs
about 40 ms per command otherwise.
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import HarnessError

if TYPE_CHECKING:
    import paramiko  # imported where used: Vm.boot loads it while the guest starts


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int  # -1 when the channel closed without one (guest died)
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class CommandFailed(HarnessError):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(
            f"guest command failed ({result.exit_status}): {result.command}\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
        self.result = result


class CommandTimeout(HarnessError):
    def __init__(self, command: str, timeout: float) -> None:
        super().__init__(f"guest command timed out after {timeout:.0f}s: {command}")
        self.command = command
        self.timeout = timeout


def command_line(argv: Sequence[str]) -> str:
    """What an SSH exec request carries: one argument is a shell command line
    as typed; several are an exact argv, quoted so the guest's shell splits
    them back into the same words."""
    if not argv:
        raise HarnessError("no command given")
    return argv[0] if len(argv) == 1 else shlex.join(argv)


class Running:
    """A command started on its own channel; wait() collects it."""

    def __init__(
        self,
        chan: paramiko.Channel,
        command: str,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> None:
        self.chan = chan
        self.command = command
        self.t0 = time.monotonic()
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._on_out = on_stdout
        self._on_err = on_stderr

    def _drain(self) -> None:
        while self.chan.recv_ready():
            data = self.chan.recv(65536)
            self._out.append(data)
            if self._on_out:
                self._on_out(data)
        while self.chan.recv_stderr_ready():
            data = self.chan.recv_stderr(65536)
            self._err.append(data)
            if self._on_err:
                self._on_err(data)

    def done(self) -> bool:
        self._drain()
        return self.chan.exit_status_ready() or self.chan.closed

    def wait(self, timeout: float | None = None) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if timeout is not None and deadline is not None and time.monotonic() > deadline:
                self.chan.close()
                raise CommandTimeout(self.command, timeout)
            if not self.chan.get_transport() or not self.chan.get_transport().is_active():
                break
            time.sleep(0.005)
        # exit status may arrive just after EOF
        end = time.monotonic() + 1.0
        while not self.chan.exit_status_ready() and time.monotonic() < end and not self.chan.closed:
            time.sleep(0.005)
        self._drain()
        status = self.chan.recv_exit_status() if self.chan.exit_status_ready() else -1
        self.chan.close()
        return CommandResult(
            self.command,
            status,
            b"".join(self._out).decode(errors="replace"),
            b"".join(self._err).decode(errors="replace"),
            time.monotonic() - self.t0,
        )


def _quiet_paramiko() -> None:
    """Paramiko's transport thread logs a connection that breaks with its
    traceback; with no handler anywhere, Python prints that on stderr (the
    guest torn down under a handshake, as SIGTERM does).  The harness says
    what failed itself, so paramiko's log goes nowhere."""
    import logging

    log = logging.getLogger("paramiko")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
        log.propagate = False


class Guest:
    """An SSH session to a guest with its host key pinned."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, host: str, port: int, key_path: Path, host_key_pub: str, timeout: float = 30.0) -> "Guest":
        import paramiko

        _quiet_paramiko()
        key = paramiko.ECDSAKey.from_private_key_file(str(key_path))
        kind, b64 = host_key_pub.split()[:2]
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[{host}]:{port}", kind, _pkey(kind, b64))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                sock = socket.create_connection((host, port), timeout=5)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                client.connect(
                    host,
                    port,
                    username="root",
                    pkey=key,
                    sock=sock,
                    timeout=10,
                    allow_agent=False,
                    look_for_keys=False,
                    banner_timeout=10,
                    auth_timeout=10,
                )
                transport = client.get_transport()
                if transport is None:
                    raise paramiko.SSHException("no transport after connect")
                transport.set_keepalive(5)
                return cls(client)
            except paramiko.BadHostKeyException as e:
                raise HarnessError(f"guest host key does not match the image's: {e}") from e
            except (OSError, paramiko.SSHException, EOFError) as e:
                last = e
                time.sleep(0.05)
        raise HarnessError(f"could not log into the guest at {host}:{port}: {last}")

    def close(self) -> None:
        self.client.close()

    def alive(self) -> bool:
        t = self.client.get_transport()
        return bool(t and t.is_active())

    def start(
        self,
        command: str,
        stdin: bytes | None = None,
        pty: bool = False,
        on_stdout: Callable[[bytes], None] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> Running:
        """Start a command on a new channel and return at once."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HarnessError("the SSH connection to the guest is gone (guest crashed?)")
        with self._lock:
            chan = transport.open_session(timeout=10)
        if pty:
            chan.get_pty()
        chan.exec_command(command)
        if stdin is not None:
            chan.sendall(stdin)
            chan.shutdown_write()
        return Running(chan, command, on_stdout, on_stderr)

    def run(
        self, command: str, timeout: float | None = 300, check: bool = False, stdin: bytes | None = None
    ) -> CommandResult:
        result = self.start(command, stdin=stdin).wait(timeout)
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    def run_many(self, commands: Sequence[str], timeout: float | None = 300) -> list[CommandResult]:
        """Run commands concurrently, one channel each; results in order."""
        running = [self.start(c) for c in commands]
        return [r.wait(timeout) for r in running]

    def upload(self, local: Path | bytes, remote: str, mode: int = 0o644) -> None:
        """Copy a file in (dropbear has no SFTP: `cat` on a channel)."""
        data = local if isinstance(local, bytes) else Path(local).read_bytes()
        q = shlex.quote(remote)
        self.run(f"cat > {q}.part && chmod {mode:o} {q}.part && mv {q}.part {q}", stdin=data, check=True)


def _pkey(kind: str, b64: str) -> paramiko.PKey:
    import base64

    import paramiko

    return paramiko.ECDSAKey(data=base64.b64decode(b64))
