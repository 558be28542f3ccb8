"""One exception type for everything a user can get wrong or the host lacks.

Front ends print it as a single line and exit non-zero; anything else is a bug.
"""

from .exitcodes import ExitStatus


class HarnessError(Exception):
    """A clear, user-facing failure (bad input, missing tool, failed boot)."""

    exit_code = ExitStatus.BAD_INPUT
