"""QEMU's machine protocol (QMP), over a socketpair handed to QEMU at spawn.

A socketpair rather than a listening socket: nothing is written to the file
system, no path length limit, and nobody else can connect.  QEMU takes its end
as an already connected client socket (`-chardev socket,fd=N`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from ..errors import HarnessError


class QmpError(HarnessError):
    """QEMU refused a command, went away, or did not answer in time."""


class Qmp:
    """One QMP session.  Events are kept (`events`) for whoever cares."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.events: list[dict[str, Any]] = []
        self._greeted = False
        self._child_fd = -1

    @classmethod
    def pair(cls) -> tuple["Qmp", int]:
        """Our session and QEMU's end of the pair (an inheritable fd: pass it
        to the child, then call `child_started`)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fd = theirs.detach()
        os.set_inheritable(fd, True)
        q = cls(ours)
        q._child_fd = fd
        return q, fd

    @staticmethod
    def argv(fd: int) -> list[str]:
        return ["-chardev", f"socket,id=qmp,fd={fd}", "-mon", "chardev=qmp,mode=control"]

    def child_started(self) -> None:
        """Close our copy of QEMU's end, so that QEMU's exit reads as EOF here."""
        if self._child_fd >= 0:
            os.close(self._child_fd)
            self._child_fd = -1

    def close(self) -> None:
        self.child_started()
        self.sock.close()

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise QmpError("QEMU did not answer on its control socket in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError as e:  # it closed with our command unread: gone all the same
                raise QmpError("QEMU exited (its control socket was reset)") from e
            except OSError as e:
                raise QmpError(f"QEMU's control socket failed: {e}") from e
            if not data:
                raise QmpError("QEMU exited (its control socket closed)")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise QmpError(f"QEMU sent a line that is not JSON: {line[:200]!r}") from e
        if not isinstance(msg, dict):
            raise QmpError(f"QEMU sent a message that is not an object: {line[:200]!r}")
        return msg

    def _greet(self, deadline: float) -> None:
        if self._greeted:
            return
        msg = self._message(deadline)
        if "QMP" not in msg:
            raise QmpError(f"QEMU's control socket did not greet: {msg}")
        self._greeted = True
        self._call("qmp_capabilities", {}, deadline)

    def _call(self, name: str, args: dict[str, Any], deadline: float) -> Any:
        try:
            self.sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        except OSError as e:
            raise QmpError(f"QEMU exited (its control socket: {e.strerror or e})") from e
        while True:
            msg = self._message(deadline)
            if "event" in msg:
                self.events.append(msg)
                continue
            if "error" in msg:
                err = msg["error"]
                raise QmpError(f"QEMU refused {name}: {err.get('desc', err) if isinstance(err, dict) else err}")
            return msg.get("return")

    def cmd(self, name: str, timeout: float = 10.0, **args: Any) -> Any:
        deadline = time.monotonic() + timeout
        self._greet(deadline)
        return self._call(name, args, deadline)

    def hmp(self, command: str, timeout: float = 10.0) -> str:
        """A human monitor command (one with no QMP form, such as gdbserver); its output."""
        deadline = time.monotonic() + timeout
        self._greet(deadline)
        return str(self._call("human-monitor-command", {"command-line": command}, deadline) or "")

    def status(self, timeout: float = 10.0) -> str:
        return str(self.cmd("query-status", timeout)["status"])

    def wait_status(self, leave: tuple[str, ...], timeout: float) -> str:
        """Poll until the run state is none of `leave`; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(max(0.1, deadline - time.monotonic()))
            if status not in leave:
                return status
            if time.monotonic() > deadline:
                raise QmpError(f"QEMU stayed {status!r} for {timeout:.0f}s")
            time.sleep(0.005)

    def wait_migration(self, timeout: float) -> dict[str, Any]:
        """Poll an outgoing migration until it ends; its final query-migrate."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.cmd("query-migrate", max(0.1, deadline - time.monotonic()))
            status = info.get("status")
            if status == "completed":
                return info
            if status in ("failed", "cancelled"):
                raise QmpError(f"saving the guest failed: {info.get('error-desc', status)}")
            if time.monotonic() > deadline:
                raise QmpError(f"saving the guest took over {timeout:.0f}s (state {status})")
            time.sleep(0.01)
