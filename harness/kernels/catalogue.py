"""The harness's own Debian catalogue: apt state under the cache, never the host's.

apt-get and apt-cache run with a generated config file (``-c``) that points
sources, lists, status, package cache and preferences into ``cache_dir()/apt``,
so the host's lists, pins and installed packages are never read and a kernel
spec resolves to the same packages on any host that has apt.  The archive is
the one the host's own apt sources name (or HARNESS_DEBIAN_MIRROR /
HARNESS_DEBIAN_SECURITY); Release signatures are checked with Debian's archive
keyring.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Iterable, Mapping, Protocol, Sequence, TypeVar

from . import localtree
from .localtree import LocalTree
from ..errors import HarnessError
from ..paths import cache_dir, data_dir
from ..progress import progress
from ..util import file_lock, file_sha256, hash_inputs, last_line, need_tool, run_tool

ARCH = "amd64"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR_ENV = "HARNESS_DEBIAN_MIRROR"
SECURITY_ENV = "HARNESS_DEBIAN_SECURITY"
REFRESH_AFTER_S = 24 * 3600
HOST_SOURCES = Path("/etc/apt")


# ---------------------------------------------------------------- suites and archives


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
    return (Suite(name, name, Archive.MAIN), Suite(f"{name}-updates", name, Archive.MAIN),
            Suite(f"{name}-security", name, Archive.SECURITY))


SUITES: tuple[Suite, ...] = (
    *_release("bullseye"), *_release("bookworm"), *_release("trixie"),
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
_DEBIAN_SUITE_BASES = frozenset({
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "experimental",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
})


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
            out += [HostSource(uri.rstrip("/"), suite)
                    for uri in fields.get("URIs", "").split() for suite in fields.get("Suites", "").split()]
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
        raise HarnessError(f"no Debian archive in this host's apt sources; set {MIRROR_ENV} "
                           "to a Debian mirror's base URL (the folder holding dists/ and pool/)")
    if not security:
        # Debian's mirrors put the security archive next to the main one.
        if not main.endswith("/debian"):
            raise HarnessError(f"no Debian security archive in this host's apt sources; set "
                               f"{SECURITY_ENV} to its base URL")
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


# ---------------------------------------------------------------- the private apt state


def sources_text(suite: Suite, mirrors: Mirrors, keyring: Path = KEYRING) -> str:
    """One deb822 source file for one suite."""
    lines = [
        "Types: deb",
        f"URIs: {mirrors.url(suite.archive)}",
        f"Suites: {suite.name}",
        "Components: main",
        f"Architectures: {ARCH}",
        "Targets: Packages",
        f"Signed-By: {keyring}",
    ]
    if suite.stale_ok:
        lines.append("Check-Valid-Until: no")
    return "\n".join(lines) + "\n"


def apt_config(root: Path) -> str:
    """The config file every apt call reads last (``-c``): all state in ``root``.

    The host's apt.conf.d is still read first (it may hold the proxy this
    machine needs); what in it could redirect or slow us is overridden here."""
    return "\n".join([
        'Dir::Etc::SourceList "/dev/null";',
        f'Dir::Etc::SourceParts "{root}/sources.list.d";',
        f'Dir::Etc::Preferences "{root}/preferences";',
        f'Dir::Etc::PreferencesParts "{root}/preferences.d";',
        f'Dir::Etc::Trusted "{root}/trusted.gpg";',
        f'Dir::Etc::TrustedParts "{root}/trusted.gpg.d";',
        f'Dir::State "{root}/state";',
        f'Dir::State::Lists "{root}/lists";',
        f'Dir::State::Status "{root}/status";',
        f'Dir::Cache "{root}/cache";',
        'Dir::Cache::Archives "archives";',
        'Dir::Cache::pkgcache "pkgcache.bin";',
        # One 110 MB binary cache is enough: the status file never changes.
        'Dir::Cache::srcpkgcache "";',
        f'APT::Architecture "{ARCH}";',
        "#clear APT::Architectures;",
        f'APT::Architectures {{ "{ARCH}"; }};',
        "#clear Acquire::Languages;",
        'Acquire::Languages { "none"; };',
        'Acquire::GzipIndexes "true";',
        'Acquire::Check-Valid-Until "true";',
        'Acquire::Check-Date "true";',
        # Hooks meant for the host's own updates (appstream, packagekit) must not run.
        "#clear APT::Update::Pre-Invoke;",
        "#clear APT::Update::Post-Invoke;",
        "#clear APT::Update::Post-Invoke-Success;",
        "#clear DPkg::Pre-Invoke;",
        "#clear DPkg::Post-Invoke;",
        "#clear DPkg::Pre-Install-Pkgs;",
        'APT::Get::List-Cleanup "true";',
        "",
    ])


def config_hash(mirrors: Mirrors, keyring: Path = KEYRING) -> str:
    """Changes whenever the lists would have to be fetched anew."""
    text = "".join(sources_text(s, mirrors, keyring) for s in SUITES)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- refresh and staleness


class Refresh(Enum):
    """Why the lists are fetched now."""

    ASKED = "asked for"
    MISSING = "none yet"
    INCOMPLETE = "the last update did not finish"
    CHANGED = "archive or keyring changed"
    OLD = "older than a day"


@dataclass(frozen=True)
class ListsMarker:
    """Written into a lists folder once its update finished."""

    config: str
    updated: float  # time.time() when the update finished

    def to_json(self) -> str:
        return json.dumps({"config": self.config, "updated": self.updated})

    @classmethod
    def parse(cls, text: str) -> "ListsMarker | None":
        try:
            data = json.loads(text)
            return cls(str(data["config"]), float(data["updated"]))
        except (ValueError, KeyError, TypeError):
            return None


def refresh_reason(lists_exist: bool, marker: ListsMarker | None, config: str, now: float,
                   asked: bool) -> Refresh | None:
    """Whether (and why) the lists must be fetched again; None: use them."""
    if asked:
        return Refresh.ASKED
    if not lists_exist:
        return Refresh.MISSING
    if marker is None:
        return Refresh.INCOMPLETE
    if marker.config != config:
        return Refresh.CHANGED
    if not 0 <= now - marker.updated < REFRESH_AFTER_S:
        return Refresh.OLD
    return None


def valid_until(release_text: str) -> datetime | None:
    """The Valid-Until date of an (In)Release file, if it has one."""
    m = re.search(r"^Valid-Until:\s*(.+?)\s*$", release_text, re.M)
    if not m:
        return None
    try:
        return email.utils.parsedate_to_datetime(m.group(1)).astimezone(timezone.utc)
    except (TypeError, ValueError):
        return None


def stale_warning(expired: Sequence[tuple[str, datetime]]) -> str | None:
    """One line for every suite used past its Valid-Until."""
    if not expired:
        return None
    dates = {d.date() for _, d in expired}
    names = " and ".join(name for name, _ in expired)
    if len(dates) == 1:
        since = f"since {next(iter(dates)).isoformat()}"
    else:
        since = "since " + ", ".join(f"{d.date().isoformat()} ({name})" for name, d in expired)
    plural = "s are" if len(expired) > 1 else " is"
    return (f"warning: Debian {names} Release file{plural} past Valid-Until ({since}); "
            "used anyway, signatures checked")


# ---------------------------------------------------------------- control stanzas


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


def _one_dep(fields: Fields, pattern: str) -> Dep:
    found = depends(fields, pattern)
    if not found:
        raise HarnessError(f"{fields.get('Package')} {fields.get('Version')} has no dependency "
                           f"matching {pattern}; the kernel packaging changed")
    return found[0]


# ---------------------------------------------------------------- kernel rows


@dataclass(frozen=True)
class KernelRow:
    """One kernel spec: which meta-packages of which release stand for it,
    (``source`` set) which source package and config fragment the harness
    builds it from, or (``local`` set) a kernel built elsewhere, named by its
    path (localtree.py)."""

    name: str
    release: str  # "bookworm"; its suites are suites_of(release); LOCAL_RELEASE for a local tree
    flavour: str  # "amd64", "rt-amd64"; "debug" for a kernel built here
    series: str | None  # the ABI must start with it; None for moving targets
    source: str | None = None  # "linux-source-6.12": built from Debian's source
    fragment: str | None = None  # its config fragment, under kconfigs/
    # Guest slowdown against a stock kernel (lockdep and KASAN under TCG):
    # boot timeouts, race durations and latency bounds are multiplied by it.
    time_factor: float = 1.0
    # Boot the ELF vmlinux through its PVH entry (no decompression under TCG);
    # False boots the bzImage.
    boot_elf: bool = True
    # Kernel parameters this kernel's guests always boot with (part of the
    # snapshot key, like the rest of the QEMU command line).
    cmdline: tuple[str, ...] = ()
    local: LocalTree | None = None

    @property
    def image_meta(self) -> str:
        return f"linux-image-{self.flavour}"

    @property
    def headers_meta(self) -> str:
        return f"linux-headers-{self.flavour}"

    @property
    def fragment_path(self) -> Path | None:
        return KCONFIGS / self.fragment if self.fragment else None


KCONFIGS = data_dir("kconfigs")
# A local tree comes from no Debian release: nothing looks its suite up.
LOCAL_RELEASE = "local"
# What debugkernel.py makes of a source row, in words: part of the release
# string, so a change here is a new kernel (and new module builds).  Change it
# whenever a change there changes the kernel it builds; not for plumbing.
SOURCE_RECIPE = "x86_64_defconfig + kvm_guest.config + fragment, olddefconfig; make all; modules_install strip"

ROWS: dict[str, KernelRow] = {
    r.name: r
    for r in (
        KernelRow("5.10", "bullseye", "amd64", "5.10"),
        KernelRow("5.10-rt", "bullseye", "rt-amd64", "5.10"),
        KernelRow("6.1", "bookworm", "amd64", "6.1"),
        KernelRow("6.1-rt", "bookworm", "rt-amd64", "6.1"),
        KernelRow("6.12", "trixie", "amd64", "6.12"),
        KernelRow("6.12-rt", "trixie", "rt-amd64", "6.12"),
        KernelRow("sid", "sid", "amd64", None),
        KernelRow("sid-rt", "sid", "rt-amd64", None),
        KernelRow("rc", "experimental", "amd64", None),
        # Its PVH entry triple-faults at once under TCG (KASAN's early shadow
        # setup, seen with 6.12.118): it boots through the bzImage.
        # kasan_multi_shot: generic KASAN reports only the first bad access of
        # a boot otherwise (mm/kasan/report.c, report_enabled()), and a guest
        # must see every one of a run's.
        # no5lvl: with QEMU's `-cpu max` the guest has LA57.  identify_cpu()
        # zeroes boot_cpu_data's capabilities (arch/x86/kernel/cpu/common.c)
        # with interrupts already on (init/main.c); an interrupt in that window
        # runs KASAN's range check, whose pgtable_l5_enabled() then reads
        # LA57 as off, puts the direct map (ff11...) below the shadow's start
        # and reports "wild-memory-access in do_raw_spin_lock".  With 4-level
        # paging the answer cannot change under it.
        KernelRow("6.12-debug", "trixie", "debug", "6.12", source="linux-source-6.12",
                  fragment="debug.config", time_factor=4.0, boot_elf=False,
                  cmdline=("kasan_multi_shot", "no5lvl")),
    )
}
# `--kernel all`: every spec that comes as packages; kernels built here are
# asked for by name (a cold build takes many minutes).
PACKAGED = tuple(r.name for r in ROWS.values() if r.source is None)
DEFAULT_KERNEL = "6.1"
DEFAULT_RELEASE = ROWS[DEFAULT_KERNEL].release  # also where the guest's user space comes from


class Role(Enum):
    IMAGE = "image"
    BINARY = "binary"  # sid/experimental: the kernel itself, split from the image
    MODULES = "modules"  # sid/experimental: the .ko.xz files, split from the image
    BASE = "base"  # sid/experimental: config, System.map, modules.order/builtin
    HEADERS = "headers"
    HEADERS_COMMON = "headers-common"
    KBUILD = "kbuild"
    SOURCE = "source"  # kernels built here: linux-source-X.Y


D = TypeVar("D", bound="Deb")


@dataclass(frozen=True)
class Deb:
    """One Debian package at one version, as the catalogue's lists give it:
    what `apt-get download` fetches and what the download is checked against."""

    name: str
    version: str
    arch: str
    size: int
    sha256: str

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def deb_name(self) -> str:
        """The file `apt-get download` writes."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "arch": self.arch, "size": self.size,
                "sha256": self.sha256}

    @classmethod
    def fields_of(cls, d: Mapping[str, object]) -> tuple[str, str, str, int, str]:
        size = d["size"]
        if not isinstance(size, int):
            raise TypeError("size")
        return str(d["name"]), str(d["version"]), str(d["arch"]), size, str(d["sha256"])

    @classmethod
    def from_fields(cls: type[D], fields: Mapping[str, str]) -> D:
        """From the package's stanza in the lists (`apt-cache show`)."""
        return cls(fields["Package"], fields["Version"], fields.get("Architecture", ARCH),
                   int(fields.get("Size", "0") or 0), fields.get("SHA256", ""))


@dataclass(frozen=True)
class Package(Deb):
    """A kernel's package and what it is to the kernel (after the Deb's fields)."""

    role: Role

    def to_json(self) -> dict[str, object]:
        return {"role": self.role.value, **super().to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "Package":
        return cls(*cls.fields_of(d), role=Role(d["role"]))


@dataclass(frozen=True)
class ResolvedKernel:
    """The exact packages a row stands for in today's lists."""

    row: KernelRow
    abi: str  # uname -r: "6.1.0-57-amd64", "7.2.13+deb14-amd64"
    version: str  # Debian version of the image package
    packages: tuple[Package, ...]

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(p.pin for p in self.packages)

    def of(self, role: Role) -> tuple[Package, ...]:
        return tuple(p for p in self.packages if p.role is role)

    @property
    def split(self) -> bool:
        """The image package only depends on the kernel and modules packages."""
        return bool(self.of(Role.BINARY))

    def to_json(self) -> dict[str, object]:
        return {"abi": self.abi, "version": self.version, "packages": [p.to_json() for p in self.packages]}

    @classmethod
    def from_json(cls, row: KernelRow, d: Mapping[str, object]) -> "ResolvedKernel":
        packages = d["packages"]
        if not isinstance(packages, list):
            raise TypeError("packages")
        return cls(row, str(d["abi"]), str(d["version"]), tuple(Package.from_json(p) for p in packages))


class Lookup(Protocol):
    """What the dependency walk asks of a package catalogue."""

    def versions(self, names: Sequence[str], suites: Sequence[str]) -> dict[str, list[str]]:
        """{name: its versions in any of `suites`, newest first}; unknown names left out."""

    def stanzas(self, pins: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Fields]:
        """{(name, version): control fields}; unknown pins left out."""


def _abi_of(image_pkg: str) -> str:
    return image_pkg.removeprefix("linux-image-").removesuffix("-unsigned")


def source_release(row: KernelRow, upstream: str, source_sha256: str) -> str:
    """uname -r of a kernel built here: its upstream version, its flavour and a
    hash of what it is built from (source, config fragment, build recipe)."""
    assert row.fragment_path is not None
    key = hash_inputs(source_sha256, row.fragment_path, SOURCE_RECIPE)[:8]
    return f"{upstream}-{row.flavour}-{key}"


def walk_source(row: KernelRow, lookup: Lookup, skip: frozenset[str] = frozenset()) -> ResolvedKernel:
    """A row built from source: the newest version of its source package."""
    assert row.source is not None
    suites = suites_of(row.release)
    versions = [v for v in lookup.versions([row.source], suites).get(row.source, [])
                if f"{row.source}={v}" not in skip]
    if not versions:
        raise HarnessError(f"kernel {row.name}: no {row.source} in Debian {row.release} in the catalogue; "
                           "try: harness kernels --refresh")
    version = versions[0]
    (fields,) = _show(lookup, row, [(row.source, version)])
    upstream = version.split("-")[0].split("+")[0]
    if row.series is not None and not re.match(re.escape(row.series) + r"[.-]", upstream):
        raise HarnessError(f"kernel {row.name}: {row.source} in {row.release} is {upstream}, not {row.series}")
    pkg = Package(row.source, version, fields.get("Architecture", "all"),
                  int(fields.get("Size", "0") or 0), fields.get("SHA256", ""), role=Role.SOURCE)
    return ResolvedKernel(row, source_release(row, upstream, pkg.sha256), version, (pkg,))


def walk(row: KernelRow, lookup: Lookup, skip: frozenset[str] = frozenset()) -> ResolvedKernel:
    """Meta-packages -> the exact image, headers, headers-common, kbuild (and
    for split images the binary, modules and base) packages of one ABI: the
    newest version of the release none of whose packages is in `skip`
    ("name=version" pins the archive failed to serve)."""
    if row.source is not None:
        return walk_source(row, lookup, skip)
    suites = suites_of(row.release)
    metas = lookup.versions([row.image_meta, row.headers_meta], suites)
    for meta in (row.image_meta, row.headers_meta):
        if meta not in metas:
            raise HarnessError(f"kernel {row.name}: no {meta} in Debian {row.release} in the catalogue; "
                               "try: harness kernels --refresh")
    for image_meta_ver in metas[row.image_meta]:
        headers_meta_ver = (image_meta_ver if image_meta_ver in metas[row.headers_meta]
                            else metas[row.headers_meta][0])
        res = _walk_from(row, lookup, suites, image_meta_ver, headers_meta_ver)
        if not skip.intersection(res.pins):
            return res
    raise HarnessError(f"kernel {row.name}: the archive serves no version of {row.image_meta} in "
                       f"{row.release} whole (failed: {', '.join(sorted(skip))}); "
                       "try: harness kernels --refresh")


def _walk_from(row: KernelRow, lookup: Lookup, suites: Sequence[str], image_meta_ver: str,
               headers_meta_ver: str) -> ResolvedKernel:
    meta_fields = _show(lookup, row, [(row.image_meta, image_meta_ver), (row.headers_meta, headers_meta_ver)])
    image = _one_dep(meta_fields[0], r"linux-image-.*")
    headers = _one_dep(meta_fields[1], r"linux-headers-.*")
    pinned = _pin(lookup, suites, [image, headers], image_meta_ver)
    (image_pkg, image_ver), (headers_pkg, headers_ver) = pinned
    abi = _abi_of(image_pkg)
    if headers_pkg.removeprefix("linux-headers-") != abi or image_ver != headers_ver:
        raise HarnessError(f"kernel {row.name}: image {image_pkg} {image_ver} and headers {headers_pkg} "
                           f"{headers_ver} differ; refusing a mismatched pair (try: harness kernels --refresh)")
    if row.series is not None and not re.match(re.escape(row.series) + r"[.-]", abi):
        raise HarnessError(f"kernel {row.name}: {row.image_meta} in {row.release} now points at {abi}, "
                           f"not {row.series}")
    image_fields, headers_fields = _show(lookup, row, pinned)
    abi_re = re.escape(abi)
    wanted: list[tuple[Role, Dep]] = [
        (Role.IMAGE, Dep(image_pkg, image_ver)),
        *[(Role.BINARY, d) for d in depends(image_fields, "linux-binary-" + abi_re)],
        *[(Role.MODULES, d) for d in depends(image_fields, "linux-modules-" + abi_re)],
        *[(Role.BASE, d) for d in depends(image_fields, "linux-base-" + abi_re)],
        (Role.HEADERS, Dep(headers_pkg, headers_ver)),
        (Role.HEADERS_COMMON, _one_dep(headers_fields, r"linux-headers-.*-common(-rt)?")),
        (Role.KBUILD, _one_dep(headers_fields, r"linux-kbuild-.*")),
    ]
    pins = _pin(lookup, suites, [d for _, d in wanted], headers_ver)
    fields = _show(lookup, row, pins)
    packages = tuple(
        Package(name, ver, f.get("Architecture", ARCH), int(f.get("Size", "0") or 0), f.get("SHA256", ""), role=role)
        for (role, _), (name, ver), f in zip(wanted, pins, fields)
    )
    return ResolvedKernel(row, abi, image_ver, packages)


def _pin(lookup: Lookup, suites: Sequence[str], deps: Sequence[Dep], prefer: str) -> list[tuple[str, str]]:
    """Exact versions: the one a dependency names, else `prefer` (the version of
    the package asking: one source upload) if the suites have it, else the newest."""
    loose = [d.name for d in deps if d.version is None]
    found = lookup.versions(loose, suites) if loose else {}
    out = []
    for d in deps:
        have = found.get(d.name, [])
        version = d.version or (prefer if prefer in have else have[0] if have else None)
        if version is None:
            raise HarnessError(f"no {d.name} in Debian {' '.join(suites)} in the catalogue; "
                               "try: harness kernels --refresh")
        out.append((d.name, version))
    return out


def _show(lookup: Lookup, row: KernelRow, pins: Sequence[tuple[str, str]]) -> list[Fields]:
    found = lookup.stanzas(pins)
    missing = [f"{n}={v}" for n, v in pins if (n, v) not in found]
    if missing:
        raise HarnessError(f"kernel {row.name}: {', '.join(missing)} not in the catalogue "
                           "(try: harness kernels --refresh)")
    return [found[p] for p in pins]


# ---------------------------------------------------------------- apt, pointed at the catalogue


@dataclass(frozen=True)
class Catalogue:
    """The apt state folder and the archives it was made for."""

    root: Path
    mirrors: Mirrors
    keyring: Path = KEYRING

    @classmethod
    def default(cls) -> "Catalogue":
        return cls(cache_dir() / "apt", host_mirrors())

    @property
    def conf(self) -> Path:
        return self.root / "apt.conf"

    @property
    def lists(self) -> Path:
        """A symlink to the current complete lists folder."""
        return self.root / "lists"

    @property
    def config(self) -> str:
        return config_hash(self.mirrors, self.keyring)

    def argv(self, tool: str, *args: str, lists: Path | None = None) -> list[str]:
        extra = ["-o", f"Dir::State::Lists={lists}"] if lists is not None else []
        return [tool, "-c", str(self.conf), *extra, *args]

    def prepare(self) -> None:
        """Write sources, config and empty state (idempotent)."""
        need_tool("apt-get", "apt")
        if not self.keyring.is_file():
            raise HarnessError(f"Debian's archive keyring {self.keyring} is missing; install it with: "
                               "apt-get install debian-archive-keyring")
        for sub in ("sources.list.d", "preferences.d", "trusted.gpg.d", "state", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        wanted = {f"{s.name}.sources": sources_text(s, self.mirrors, self.keyring) for s in SUITES}
        parts = self.root / "sources.list.d"
        for stray in parts.iterdir():
            if stray.name not in wanted:
                stray.unlink(missing_ok=True)
        for name, text in wanted.items():
            _write_if_changed(parts / name, text)
        _write_if_changed(self.conf, apt_config(self.root))
        _write_if_changed(self.root / "status", "")
        _write_if_changed(self.root / "preferences", "")

    def marker(self) -> ListsMarker | None:
        try:
            return ListsMarker.parse((self.lists / ".complete.json").read_text())
        except OSError:
            return None

    def update(self, refresh: bool = False) -> None:
        """Fetch the lists if asked, missing, unfinished, changed or a day old."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Under the lock: a second process (pytest -n 2 on a cold cache) would
        # otherwise remove the first one's half-written sources as strays.
        with file_lock(self.root / "update.lock"):
            self.prepare()
            reason = refresh_reason(self.lists.exists(), self.marker(), self.config, time.time(), refresh)
            if reason is not None:
                self._fetch_lists(reason)

    def _fetch_lists(self, reason: Refresh) -> None:
        """apt-get update into a new folder; it becomes current only once complete,
        so an interrupted update is never used and is redone next time."""
        progress(f"catalogue: updating Debian package lists ({reason.value})")
        self._drop_old_lists(keep=self.lists.resolve() if self.lists.exists() else None)
        new = self.root / f"lists.{time.time_ns()}"
        if self.lists.exists():
            # Hard links: apt replaces files by rename, so the current lists stay
            # intact, and unchanged indexes are not fetched again.
            shutil.copytree(self.lists.resolve(), new, copy_function=os.link,
                            ignore=shutil.ignore_patterns(".complete.json", "lock", "partial"))
        (new / "partial").mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        proc = run_tool(self.argv("apt-get", "update", "-q", "--error-on=any", lists=new), check=False)
        if proc.returncode != 0:
            shutil.rmtree(new, ignore_errors=True)
            raise HarnessError(f"apt-get update of the kernel catalogue failed: {_apt_error(proc)} "
                               f"(check that {self.mirrors.main} and {self.mirrors.security} are reachable "
                               f"Debian archives signed by {self.keyring}, or set {MIRROR_ENV} / {SECURITY_ENV})")
        missing = [s.name for s in SUITES if not list(new.glob(f"*_dists_{s.name}_InRelease"))]
        if missing:
            shutil.rmtree(new, ignore_errors=True)
            raise HarnessError(f"apt-get update of the kernel catalogue fetched no Release file for "
                               f"{' '.join(missing)}; try: harness kernels --refresh")
        (new / ".complete.json").write_text(ListsMarker(self.config, time.time()).to_json())
        link = self.root / f"lists.link.{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(new.name)
        os.replace(link, self.lists)
        for cached in ("pkgcache.bin", "srcpkgcache.bin"):
            (self.root / "cache" / cached).unlink(missing_ok=True)
        self._drop_old_lists(keep=new)
        # Parsing the lists takes seconds: once here rather than in the first lookup.
        run_tool(self.argv("apt-cache", "gencaches"), what="apt-cache gencaches", fix="harness kernels --refresh")
        progress(f"catalogue: lists updated in {time.monotonic() - t0:.1f} s")

    def _drop_old_lists(self, keep: Path | None) -> None:
        """Remove unfinished folders (interrupted updates) and finished ones but
        `keep` and the newest other (a reader may still be using it)."""
        finished = []
        for path in self.root.glob("lists.*"):
            if path.is_symlink():
                path.unlink(missing_ok=True)  # a link made by an update killed before its swap
            elif path != keep and (path / ".complete.json").is_file():
                finished.append(path)
            elif path != keep:
                shutil.rmtree(path, ignore_errors=True)
        finished.sort(key=lambda p: p.stat().st_mtime_ns)
        for old in finished[:-1]:
            shutil.rmtree(old, ignore_errors=True)

    def expired(self, now: datetime | None = None) -> list[tuple[str, datetime]]:
        """Suites accepted past their Valid-Until: (name, date)."""
        now = now or datetime.now(timezone.utc)
        out = []
        for suite in SUITES:
            if not suite.stale_ok:
                continue
            for release in self.lists.glob(f"*_dists_{suite.name}_InRelease"):
                until = valid_until(release.read_text(errors="replace"))
                if until is not None and until < now:
                    out.append((suite.name, until))
        return out

    def _warn_stale(self) -> None:
        line = stale_warning(self.expired())
        if line and line not in _WARNED:
            _WARNED.add(line)
            progress(line)

    # -------- Lookup

    def versions(self, names: Sequence[str], suites: Sequence[str]) -> dict[str, list[str]]:
        proc = run_tool(self.argv("apt-cache", "madison", *names), check=False,
                        what="apt-cache madison", fix="harness kernels --refresh")
        return versions_from_madison(proc.stdout, suites)

    def stanzas(self, pins: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Fields]:
        # Unknown pins make apt-cache exit non-zero; the known ones are still printed.
        proc = run_tool(self.argv("apt-cache", "show", *[f"{n}={v}" for n, v in pins]), check=False,
                        what="apt-cache show", fix="harness kernels --refresh")
        out: dict[tuple[str, str], Fields] = {}
        for fields in parse_stanzas(proc.stdout):
            out.setdefault((fields.get("Package", ""), fields.get("Version", "")), fields)
        return out


_WARNED: set[str] = set()


def _write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _apt_error(proc) -> str:
    """apt's first error line names the failing URL and cause; the last is a summary."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return errors[0] if errors else (last_line(proc.stderr) or f"exit status {proc.returncode}")


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


# ---------------------------------------------------------------- the public steps


def local_row(path: str) -> KernelRow:
    """The row of a kernel built elsewhere (`--kernel PATH`), found and
    checked now: its name is the path, its boot image and guest settings
    come from the tree."""
    tree = localtree.discover(path)
    return KernelRow(str(tree.path), LOCAL_RELEASE, "local", None, time_factor=tree.time_factor,
                     boot_elf=tree.vmlinux is not None, cmdline=tree.cmdline, local=tree)


def get_row(name: str) -> KernelRow:
    if name not in ROWS:
        raise HarnessError(f"unknown kernel spec {name!r}; valid: {', '.join(ROWS)}, all")
    return ROWS[name]


def update(refresh: bool = False) -> Catalogue:
    """The catalogue with lists at most a day old (fetched now if `refresh`)."""
    cat = Catalogue.default()
    cat.update(refresh)
    return cat


def resolve(row: KernelRow, refresh: bool = False, catalogue: Catalogue | None = None) -> ResolvedKernel:
    """A row's exact packages, remembered per lists generation."""
    cat = catalogue or update(refresh)
    stale = {s.name for s in SUITES if s.stale_ok}
    if stale & set(suites_of(row.release)):
        cat._warn_stale()  # only where a kernel from such a suite is asked for
    with file_lock(cat.root / "resolved.lock"):
        memo = _Memo.load(cat)
        # A source row's release hashes files of this tree: always worked out anew.
        known = memo.rows.get(row.name) if row.source is None else None
        if known is not None:
            try:
                return ResolvedKernel.from_json(row, known)
            except (KeyError, TypeError, ValueError):
                pass
        res = walk(row, cat, memo.unavailable)
        memo.rows[row.name] = res.to_json()
        memo.save(cat)
    return res


@dataclass
class _Memo:
    """resolved.json: rows resolved in one lists generation, and the pins the
    archive failed to serve while an older version of the same row downloaded."""

    lists: str
    rows: dict[str, dict[str, object]]
    unavailable: frozenset[str]

    @classmethod
    def load(cls, cat: Catalogue) -> "_Memo":
        generation = os.readlink(cat.lists)
        try:
            data = json.loads((cat.root / "resolved.json").read_text())
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict) or data.get("lists") != generation:
            return cls(generation, {}, frozenset())
        rows = data.get("rows")
        skip = data.get("unavailable")
        return cls(generation, rows if isinstance(rows, dict) else {},
                   frozenset(str(p) for p in skip) if isinstance(skip, list) else frozenset())

    def save(self, cat: Catalogue) -> None:
        _write_if_changed(cat.root / "resolved.json", json.dumps(
            {"lists": self.lists, "unavailable": sorted(self.unavailable), "rows": self.rows}, indent=1))


def fetch(row: KernelRow, dest: Path | None = None, refresh: bool = False,
          catalogue: Catalogue | None = None) -> tuple[ResolvedKernel, dict[Role, tuple[Path, ...]]]:
    """Resolve a row and download its .debs.  If the archive does not serve one
    of the newest packages (a mirror behind its own index), an older version
    of the same release is used and remembered for this lists generation."""
    cat = catalogue or update(refresh)
    res = resolve(row, catalogue=cat)
    failed: set[str] = set()
    first_error: HarnessError | None = None
    while True:
        missing, error = _download(res, dest, cat)
        if error is None:
            break
        first_error = first_error or error
        failed |= {p.pin for p in missing}
        try:
            older = walk(row, cat, frozenset(failed))
        except HarnessError:
            raise first_error from None
        progress(f"kernel {row.name}: the archive does not serve {', '.join(p.pin for p in missing)}; "
                 f"trying {older.abi} ({older.version})")
        res = older
    if failed:
        # Remembered only now: had the archive been unreachable, nothing would have downloaded.
        with file_lock(cat.root / "resolved.lock"):
            memo = _Memo.load(cat)
            memo.unavailable |= failed
            memo.rows[row.name] = res.to_json()
            memo.save(cat)
    return res, debs_of(res, dest)


def download_newest(names: Sequence[str], release: str, dest: Path,
                    catalogue: Catalogue | None = None) -> list[Path]:
    """The newest version of each package in a release's suites, downloaded
    into `dest` (the guest's user space: the same for every kernel and host)."""
    cat = catalogue or update()
    versions = cat.versions(names, suites_of(release))
    missing = [n for n in names if not versions.get(n)]
    if missing:
        raise HarnessError(f"Debian {release} has no {', '.join(missing)} in the kernel catalogue; "
                           "try: harness kernels --refresh")
    pins = [f"{n}={versions[n][0]}" for n in names]
    progress(f"catalogue: downloading {' '.join(pins)}")
    dest.mkdir(parents=True, exist_ok=True)
    run_tool(cat.argv("apt-get", "download", "-q", *pins), cwd=dest,
             what=f"apt-get download of {release} packages", fix="harness kernels --refresh")
    return sorted(dest.glob("*.deb"))


def download(res: ResolvedKernel, dest: Path | None = None, catalogue: Catalogue | None = None,
             ) -> dict[Role, tuple[Path, ...]]:
    """The kernel's .debs in the cache (fetched with the catalogue's apt once,
    checked against the catalogue's size and SHA256 every time)."""
    _, error = _download(res, dest, catalogue)
    if error is not None:
        raise error
    return debs_of(res, dest)


def debs_of(res: ResolvedKernel, dest: Path | None = None) -> dict[Role, tuple[Path, ...]]:
    dest = dest or cache_dir() / "debs"
    out: dict[Role, tuple[Path, ...]] = {}
    for p in res.packages:
        out[p.role] = out.get(p.role, ()) + (dest / p.deb_name,)
    return out


def _download(res: ResolvedKernel, dest: Path | None, catalogue: Catalogue | None,
              ) -> tuple[list[Package], HarnessError | None]:
    """Fetch what is missing: (packages still missing, the error) or ([], None)."""
    dest = dest or cache_dir() / "debs"
    dest.mkdir(parents=True, exist_ok=True)
    with file_lock(dest / ".lock"):
        todo = [p for p in res.packages if not _deb_ok(dest / p.deb_name, p)]
        if not todo:
            return [], None
        cat = catalogue or update()
        progress(f"kernel {res.row.name}: downloading {' '.join(p.pin for p in todo)}")
        proc = run_tool(cat.argv("apt-get", "download", "-q", *[p.pin for p in todo]), cwd=dest, check=False)
        bad = [p for p in todo if not _deb_ok(dest / p.deb_name, p)]
        for p in bad:
            (dest / p.deb_name).unlink(missing_ok=True)
        if proc.returncode != 0:
            return bad, HarnessError(f"apt-get download for kernel {res.row.name} failed: {_apt_error(proc)} "
                                     f"(archives {cat.mirrors.main} and {cat.mirrors.security}; check they "
                                     f"are reachable or set {MIRROR_ENV} / {SECURITY_ENV})")
        if bad:
            return bad, HarnessError(f"downloaded {bad[0].deb_name} does not match the catalogue's size and "
                                     "SHA256; try: harness kernels --refresh")
        return [], None


_CHECKED: dict[Path, tuple[int, int]] = {}


def _deb_ok(path: Path, pkg: Package) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != pkg.size:
        return False
    if _CHECKED.get(path) == (st.st_size, st.st_mtime_ns):
        return True
    if pkg.sha256 and file_sha256(path) != pkg.sha256:
        return False
    _CHECKED[path] = (st.st_size, st.st_mtime_ns)
    return True


def rows_from(text: str) -> list[KernelRow]:
    """`6.1,sid` or `all` -> rows; unknown names are one error with the valid list."""
    names = list(PACKAGED) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise HarnessError(f"no kernel given; valid: {', '.join(ROWS)}, all")
    return [get_row(n) for n in names]


def resolve_all(refresh: bool = False) -> list[tuple[KernelRow, ResolvedKernel | None, str | None]]:
    """Every row resolved, or the one-line reason it could not be."""
    cat = update(refresh)
    out: list[tuple[KernelRow, ResolvedKernel | None, str | None]] = []
    for row in ROWS.values():
        try:
            out.append((row, resolve(row, catalogue=cat), None))
        except HarnessError as e:
            out.append((row, None, str(e)))
    return out


