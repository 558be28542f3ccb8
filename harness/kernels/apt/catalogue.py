"""The harness's own Debian catalogue: apt state under the cache, never the host's.

apt-get and apt-cache run with a generated config file (``-c``) that points
sources, lists, status, package cache and preferences into ``cache_dir()/apt``,
so the host's lists, pins and installed packages are never read and a kernel
spec resolves to the same packages on any host that has apt.  The archive is
the one the host's own apt sources name (mirrors.py); Release signatures are
checked with Debian's archive keyring.
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
from typing import Sequence

from ...errors import HarnessError
from ...paths import cache_dir
from ...progress import progress
from ...util import file_lock, last_line, need_tool, no_space, run_tool, tool_out_of_space
from .mirrors import ARCH, KEYRING, MIRROR_ENV, SECURITY_ENV, SUITES, Mirrors, Suite, host_mirrors
from .stanzas import Fields, parse_stanzas, versions_from_madison

REFRESH_AFTER_S = 24 * 3600


# ---------------------------------------------------------------- the private apt state


LISTS_MB = 256  # the first apt-get update: 188 MiB of lists measured, and room to unpack them
LISTS_UPDATE_MB = 64


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
    return "\n".join(
        [
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
        ]
    )


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


def refresh_reason(
    lists_exist: bool, marker: ListsMarker | None, config: str, now: float, asked: bool
) -> Refresh | None:
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
    return f"warning: Debian {names} Release file{plural} past Valid-Until ({since}); used anyway, signatures checked"


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
            raise HarnessError(
                f"Debian's archive keyring {self.keyring} is missing; install it with: "
                "apt-get install debian-archive-keyring"
            )
        for sub in ("sources.list.d", "preferences.d", "trusted.gpg.d", "state", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        wanted = {f"{s.name}.sources": sources_text(s, self.mirrors, self.keyring) for s in SUITES}
        parts = self.root / "sources.list.d"
        for stray in parts.iterdir():
            if stray.name not in wanted:
                stray.unlink(missing_ok=True)
        for name, text in wanted.items():
            write_if_changed(parts / name, text)
        write_if_changed(self.conf, apt_config(self.root))
        write_if_changed(self.root / "status", "")
        write_if_changed(self.root / "preferences", "")

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
        # apt-get update that meets a full disk can hang in its http method
        # (seen on a 60 MiB cache): refuse up front instead.  The lists of
        # every suite took 188 MiB; an update over them, what changed.
        need = (LISTS_MB if not self.lists.exists() else LISTS_UPDATE_MB) << 20
        self.root.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(self.root)
        if st.f_bavail * st.f_frsize < need:
            raise no_space(new, need)
        if self.lists.exists():
            # Hard links: apt replaces files by rename, so the current lists stay
            # intact, and unchanged indexes are not fetched again.
            shutil.copytree(
                self.lists.resolve(),
                new,
                copy_function=os.link,
                ignore=shutil.ignore_patterns(".complete.json", "lock", "partial"),
            )
        (new / "partial").mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        proc = run_tool(self.argv("apt-get", "update", "-q", "--error-on=any", lists=new), check=False)
        if proc.returncode != 0:
            shutil.rmtree(new, ignore_errors=True)
            full = tool_out_of_space("apt-get update of the kernel catalogue", proc, new.parent)
            if full is not None:
                raise full
            raise HarnessError(
                f"apt-get update of the kernel catalogue failed: {apt_error(proc)} "
                f"(check that {self.mirrors.main} and {self.mirrors.security} are reachable "
                f"Debian archives signed by {self.keyring}, or set {MIRROR_ENV} / {SECURITY_ENV})"
            )
        missing = [s.name for s in SUITES if not list(new.glob(f"*_dists_{s.name}_InRelease"))]
        if missing:
            shutil.rmtree(new, ignore_errors=True)
            raise HarnessError(
                f"apt-get update of the kernel catalogue fetched no Release file for "
                f"{' '.join(missing)}; try: harness kernels --refresh"
            )
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

    def warn_stale(self) -> None:
        line = stale_warning(self.expired())
        if line and line not in _WARNED:
            _WARNED.add(line)
            progress(line)

    # -------- Lookup

    def versions(self, names: Sequence[str], suites: Sequence[str]) -> dict[str, list[str]]:
        proc = run_tool(
            self.argv("apt-cache", "madison", *names),
            check=False,
            what="apt-cache madison",
            fix="harness kernels --refresh",
        )
        return versions_from_madison(proc.stdout, suites)

    def stanzas(self, pins: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Fields]:
        # Unknown pins make apt-cache exit non-zero; the known ones are still printed.
        proc = run_tool(
            self.argv("apt-cache", "show", *[f"{n}={v}" for n, v in pins]),
            check=False,
            what="apt-cache show",
            fix="harness kernels --refresh",
        )
        out: dict[tuple[str, str], Fields] = {}
        for fields in parse_stanzas(proc.stdout):
            out.setdefault((fields.get("Package", ""), fields.get("Version", "")), fields)
        return out


_WARNED: set[str] = set()


def write_if_changed(path: Path, text: str) -> None:
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def apt_error(proc) -> str:
    """apt's first error line names the failing URL and cause; the last is a summary."""
    lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines()]
    errors = [ln for ln in lines if ln.startswith("E:")]
    return errors[0] if errors else (last_line(proc.stderr) or f"exit status {proc.returncode}")


def update(refresh: bool = False) -> Catalogue:
    """The catalogue with lists at most a day old (fetched now if `refresh`)."""
    cat = Catalogue.default()
    cat.update(refresh)
    return cat
