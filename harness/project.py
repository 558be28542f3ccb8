"""The project a command runs in: its pyproject.toml's [tool.harness] tables.

A project names its own kernels (``[tool.harness.kernels.NAME]``,
kernels/derive.py) and its own race targets (``[tool.harness.targets.NAME]``,
race/targets.py) there, usable wherever a built-in one is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import HarnessError

DEFINITIONS = "pyproject.toml"


def table(project: Path, name: str) -> tuple[Path, dict[str, Any]]:
    """The file and its [tool.harness.NAME] table ({} without either)."""
    import tomllib

    path = project / DEFINITIONS
    if not path.is_file():
        return path, {}
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise HarnessError(f"{path}: cannot read its [tool.harness.{name}]: {e}") from None
    found = doc.get("tool", {}).get("harness", {}).get(name, {})
    if not isinstance(found, dict):
        raise HarnessError(f"{path}: [tool.harness.{name}] is not a table")
    return path, found
