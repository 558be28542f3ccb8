"""Debian's suites and archives, and where the host's apt finds them: the
catalogue reads the host's sources only for their archive URLs (or
HARNESS_DEBIAN_MIRROR / HARNESS_DEBIAN_SECURITY)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping

from ...errors import HarnessError
from .stanzas import parse_control

ARCH = "amd64"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR_ENV = "HARNESS_DEBIAN_MIRROR"
SECURITY_ENV = "HARNESS_DEBIAN_SECURITY"
HOST_SOURCES = Path("/etc/apt")


class Archive(Enum):
    MAIN = "main"
    SECURITY = "security"


@dataclass(frozen=True)
class Suite:
    name: str  # as in the archive's dists/: "bookworm-security"
    release: str  # the Debian release it belongs to: "bookworm"
    archive: Archive
    # Served past its Valid-Until by the archives these machines reach: accepted
    # on its signature alone, and reported.
    stale_ok: bool = False


def _release(name: str) -> tuple[Suite, ...]:
    return (
        Suite(name, name, Archive.MAIN),
        Suite(f"{name}-updates", name, Archive.MAIN),
        Suite(f"{name}-security", name, Archive.SECURITY),
    )


SUITES: tuple[Suite, ...] = (
    *_release("bullseye"),
    *_release("bookworm"),
    *_release("trixie"),
    Suite("sid", "sid", Archive.MAIN, stale_ok=True),
    Suite("experimental", "experimental", Archive.MAIN, stale_ok=True),
)

# experimental carries only what was uploaded there; the rest of its kernels'
# dependencies come from sid.
RELEASE_FALLBACK: Mapping[str, str] = {"experimental": "sid"}


def suites_of(release: str) -> tuple[str, ...]:
    """The suites a release's packages may come from, its own first."""
    chain = [release] + ([RELEASE_FALLBACK[release]] if release in RELEASE_FALLBACK else [])
    return tuple(s.name for r in chain for s in SUITES if s.release == r)


# Suite names (without -updates/-security/...) that mark a host source as Debian's.
_DEBIAN_SUITE_BASES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "experimental",
        "oldoldstable",
        "oldstable",
        "stable",
        "testing",
        "unstable",
    }
)


@dataclass(frozen=True)
class Mirrors:
    """Base URLs of Debian's main and security archives."""

    main: str
    security: str

    def url(self, archive: Archive) -> str:
        return self.main if archive is Archive.MAIN else self.security


@dataclass(frozen=True)
class HostSource:
    uri: str
    suite: str


def parse_host_sources(name: str, text: str) -> list[HostSource]:
    """The (URI, suite) pairs of binary sources in one host file: deb822
    ``*.sources`` or one-line ``*.list``."""
    out: list[HostSource] = []
    if name.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = parse_control("\n".join(ln for ln in stanza.splitlines() if not ln.startswith("#")))
            if "deb" not in fields.get("Types", "").split():
                continue
            if fields.get("Enabled", "yes").lower() in ("no", "false", "0"):
                continue
            out += [
                HostSource(uri.rstrip("/"), suite)
                for uri in fields.get("URIs", "").split()
                for suite in fields.get("Suites", "").split()
            ]
    elif name.endswith(".list") or name == "sources.list":
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                out.append(HostSource(m.group(1).rstrip("/"), m.group(2)))
    return out


def _suite_base(suite: str) -> tuple[str, bool]:
    """("bookworm", is_security) for "bookworm-security", "bookworm/updates" (old layout)..."""
    base = suite.split("/")[0].split("-")[0]
    return base, suite.endswith("-security") or suite.endswith("/updates")


def mirrors_from(sources: Iterable[HostSource], env: Mapping[str, str]) -> Mirrors:
    """Debian's archives as the host's apt names them; the env vars win."""
    main = env.get(MIRROR_ENV, "").rstrip("/")
    security = env.get(SECURITY_ENV, "").rstrip("/")
    for src in sources:
        base, is_security = _suite_base(src.suite)
        if base not in _DEBIAN_SUITE_BASES:
            continue
        if is_security and not security:
            security = src.uri
        elif not is_security and not main:
            main = src.uri
    if not main:
        raise HarnessError(
            f"no Debian archive in this host's apt sources; set {MIRROR_ENV} "
            "to a Debian mirror's base URL (the folder holding dists/ and pool/)"
        )
    if not security:
        # Debian's mirrors put the security archive next to the main one.
        if not main.endswith("/debian"):
            raise HarnessError(
                f"no Debian security archive in this host's apt sources; set {SECURITY_ENV} to its base URL"
            )
        security = main + "-security"
    return Mirrors(main, security)


def host_mirrors(etc: Path = HOST_SOURCES, env: Mapping[str, str] | None = None) -> Mirrors:
    env = os.environ if env is None else env
    sources: list[HostSource] = []
    files = [etc / "sources.list"] + sorted((etc / "sources.list.d").glob("*"))
    for path in files:
        try:
            sources += parse_host_sources(path.name, path.read_text(errors="replace"))
        except OSError:
            continue
    return mirrors_from(sources, env)
