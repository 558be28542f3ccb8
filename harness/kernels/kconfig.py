"""Kernel configs as data: a .config or a fragment read into {"CONFIG_X": value}."""

from __future__ import annotations

import re


def parse_config(text: str) -> dict[str, str]:
    """A .config or fragment as {"CONFIG_X": value}; "is not set" is "n"."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        m = re.fullmatch(r"# (CONFIG_\w+) is not set", line)
        if m:
            out[m.group(1)] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            key, _, val = line.partition("=")
            out[key] = val
    return out
