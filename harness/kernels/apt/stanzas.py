"""apt's text formats: control stanzas (`apt-cache show`, deb822 sources),
their dependency fields, and `apt-cache madison`'s table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ...errors import HarnessError

Fields = dict[str, str]


def parse_control(text: str) -> Fields:
    """Parse one Debian control stanza (continuation lines folded)."""
    return next(iter(parse_stanzas(text)), {})


def parse_stanzas(text: str) -> list[Fields]:
    """Every stanza of apt-cache show output."""
    out: list[Fields] = []
    fields: Fields = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                out.append(fields)
            fields, key = {}, None
            continue
        if line[0] in " \t":
            if key:
                fields[key] += " " + line.strip()
            continue
        key, _, val = line.partition(":")
        fields[key] = val.strip()
    if fields:
        out.append(fields)
    return out


@dataclass(frozen=True)
class Dep:
    name: str
    version: str | None  # only for an exact (= version) dependency


def depends(fields: Fields, pattern: str) -> list[Dep]:
    """Dependencies (first alternative of each) whose name matches ``pattern``."""
    out = []
    for alt in fields.get("Depends", "").split(","):
        dep = alt.split("|")[0].strip()
        m = re.match(r"([a-z0-9][a-z0-9.+-]*)(?::\S+)?\s*(?:\((=|>=|<=|>>|<<)\s*([^)\s]+)\s*\))?", dep)
        if m and re.fullmatch(pattern, m.group(1)):
            out.append(Dep(m.group(1), m.group(3) if m.group(2) == "=" else None))
    return out


def one_dep(fields: Fields, pattern: str) -> Dep:
    found = depends(fields, pattern)
    if not found:
        raise HarnessError(
            f"{fields.get('Package')} {fields.get('Version')} has no dependency "
            f"matching {pattern}; the kernel packaging changed"
        )
    return found[0]


def versions_from_madison(text: str, suites: Sequence[str]) -> dict[str, list[str]]:
    """{package: its versions from one of `suites`, newest first}.  apt lists
    each package's versions newest first."""
    out: dict[str, list[str]] = {}
    wanted = set(suites)
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) != 3:
            continue
        name, version, where = cols
        parts = where.split()
        if len(parts) < 2 or parts[-1] != "Packages":
            continue
        if parts[1].split("/")[0] in wanted and version not in out.get(name, []):
            out.setdefault(name, []).append(version)
    return out
