"""The command line's exit statuses, in one place.

124 and 255 follow timeout(1) and ssh(1); 130 and 143 are the shell's
128 + signal number for SIGINT and SIGTERM.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    FINDINGS = 1  # race: an unexpected splat (a finding, not a failure of the tool)
    BAD_INPUT = 2  # HarnessError: something the user can fix
    TIMEOUT = 124  # run --timeout expired
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM
    GUEST_DIED = 255  # the guest went away during run's command
