"""A kernel row resolved in the catalogue (remembered per lists generation)
and its .debs downloaded, checked against the lists' size and SHA256; and the
guest's user-space packages."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...errors import HarnessError
from ...paths import cache_dir
from ...progress import progress
from ...util import file_lock, file_sha256, run_tool, tool_out_of_space
from ..table import KernelRow
from .catalogue import Catalogue, apt_error, update, write_if_changed
from .debs import Package, ResolvedKernel, Role
from .mirrors import MIRROR_ENV, SECURITY_ENV, SUITES, suites_of
from .walk import walk


def resolve(row: KernelRow, refresh: bool = False, catalogue: Catalogue | None = None) -> ResolvedKernel:
    """A row's exact packages, remembered per lists generation."""
    cat = catalogue or update(refresh)
    stale = {s.name for s in SUITES if s.stale_ok}
    if stale & set(suites_of(row.release)):
        cat.warn_stale()  # only where a kernel from such a suite is asked for
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
        return cls(
            generation,
            rows if isinstance(rows, dict) else {},
            frozenset(str(p) for p in skip) if isinstance(skip, list) else frozenset(),
        )

    def save(self, cat: Catalogue) -> None:
        write_if_changed(
            cat.root / "resolved.json",
            json.dumps({"lists": self.lists, "unavailable": sorted(self.unavailable), "rows": self.rows}, indent=1),
        )


def fetch(
    row: KernelRow, dest: Path | None = None, refresh: bool = False, catalogue: Catalogue | None = None
) -> tuple[ResolvedKernel, dict[Role, tuple[Path, ...]]]:
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
        progress(
            f"kernel {row.name}: the archive does not serve {', '.join(p.pin for p in missing)}; "
            f"trying {older.abi} ({older.version})"
        )
        res = older
    if failed:
        # Remembered only now: had the archive been unreachable, nothing would have downloaded.
        with file_lock(cat.root / "resolved.lock"):
            memo = _Memo.load(cat)
            memo.unavailable |= failed
            memo.rows[row.name] = res.to_json()
            memo.save(cat)
    return res, debs_of(res, dest)


def download_newest(names: Sequence[str], release: str, dest: Path, catalogue: Catalogue | None = None) -> list[Path]:
    """The newest version of each package in a release's suites, downloaded
    into `dest` (the guest's user space: the same for every kernel and host)."""
    cat = catalogue or update()
    versions = cat.versions(names, suites_of(release))
    missing = [n for n in names if not versions.get(n)]
    if missing:
        raise HarnessError(
            f"Debian {release} has no {', '.join(missing)} in the kernel catalogue; try: harness kernels --refresh"
        )
    pins = [f"{n}={versions[n][0]}" for n in names]
    progress(f"catalogue: downloading {' '.join(pins)}")
    dest.mkdir(parents=True, exist_ok=True)
    run_tool(
        cat.argv("apt-get", "download", "-q", *pins),
        cwd=dest,
        what=f"apt-get download of {release} packages",
        fix="harness kernels --refresh",
    )
    return sorted(dest.glob("*.deb"))


def download(
    res: ResolvedKernel, dest: Path | None = None, catalogue: Catalogue | None = None
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


def _download(
    res: ResolvedKernel, dest: Path | None, catalogue: Catalogue | None
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
        full = tool_out_of_space(f"apt-get download for kernel {res.row.name}", proc, dest)
        if proc.returncode != 0 and full is not None:
            return bad, full
        if proc.returncode != 0:
            return bad, HarnessError(
                f"apt-get download for kernel {res.row.name} failed: {apt_error(proc)} "
                f"(archives {cat.mirrors.main} and {cat.mirrors.security}; check they "
                f"are reachable or set {MIRROR_ENV} / {SECURITY_ENV})"
            )
        if bad:
            return bad, HarnessError(
                f"downloaded {bad[0].deb_name} does not match the catalogue's size and "
                "SHA256; try: harness kernels --refresh"
            )
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
