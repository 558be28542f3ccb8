"""The kernel's scripts/checkpatch.pl, run over our rendered module sources.

checkpatch.pl is not packaged on its own: `ensure_checkpatch()` downloads
Debian's `linux-source-6.1` (about 140 MB, once) from the harness's catalogue into
the cache and extracts only the three files checkpatch needs
(``scripts/checkpatch.pl``, ``scripts/spelling.txt``,
``scripts/const_structs.checkpatch``); the .deb is deleted afterwards.
`run_checkpatch(files)` returns checkpatch's terse lines
(``FILE:LINE: ERROR|WARNING|CHECK:TYPE: message``) minus the types in
``IGNORED`` (empty so far; each entry must say why it cannot apply).
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path
from typing import Iterable, Sequence

from harness.errors import HarnessError
from harness.kernels import apt
from harness.paths import cache_dir
from harness.progress import progress
from harness.util import cached, need_tool

PACKAGE = "linux-source-6.1"
RELEASE = "bookworm"
MEMBERS = ("scripts/checkpatch.pl", "scripts/spelling.txt", "scripts/const_structs.checkpatch")

# checkpatch types we switch off, each with the reason it cannot apply to our
# rendered files.  Empty on purpose: with -f (files, not patches) checkpatch
# never raises the patch-only types (FILE_PATH_CHANGES, COMMIT_MESSAGE,
# MISSING_SIGN_OFF), and our files carry their SPDX tags, so nothing needs
# ignoring (checked against 6.1's checkpatch.pl).  Add "TYPE": "why" here.
IGNORED: dict[str, str] = {}

_LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+): (?P<level>ERROR|WARNING|CHECK):(?P<type>[A-Z0-9_]+): ")


def _root() -> Path:
    return cache_dir() / "checkpatch"


def ensure_checkpatch() -> Path:
    """Path to checkpatch.pl (downloaded and extracted on first use)."""
    root = _root()
    script = root / MEMBERS[0]

    def build(root: Path) -> Path:
        need_tool("apt-get", "apt")
        need_tool("dpkg-deb", "dpkg")
        need_tool("perl", "perl")
        root.mkdir(parents=True, exist_ok=True)
        progress(f"checkpatch: downloading {PACKAGE} (about 140 MB, once)")
        for old in root.glob(f"{PACKAGE}_*.deb"):
            old.unlink()
        # From the harness's own catalogue: the host's apt (trixie's, say) may not carry it.
        apt.download_newest((PACKAGE,), RELEASE, root)
        debs = sorted(root.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            raise HarnessError(f"apt-get download {PACKAGE} left no .deb in {root}")
        progress(f"checkpatch: extracting {', '.join(MEMBERS)}")
        _extract(debs[-1], root)
        for deb in debs:
            deb.unlink()
        missing = [m for m in MEMBERS if not (root / m).is_file()]
        if missing:
            raise HarnessError(f"{PACKAGE} has no {', '.join(missing)}")
        progress(f"checkpatch: ready at {script}")
        return script

    # In place: the members present are the whole check (no stamp was ever kept).
    return cached(
        root,
        cache_dir() / "checkpatch.lock",
        lambda: script if all((root / m).is_file() for m in MEMBERS) else None,
        build,
    )


def _extract(deb: Path, root: Path) -> None:
    """The three members of the source tarball inside the .deb, streamed
    (the 140 MB tarball never lands on disk)."""
    inner = f"./usr/src/{PACKAGE}.tar.xz"
    deb_tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert deb_tar.stdout is not None
    try:
        with tarfile.open(fileobj=deb_tar.stdout, mode="r|") as outer:
            for entry in outer:
                if entry.name != inner:
                    continue
                fobj = outer.extractfile(entry)
                with tarfile.open(fileobj=fobj, mode="r|xz") as src:
                    for member in src:
                        rel = member.name.split("/", 1)[-1]
                        if rel in MEMBERS and member.isfile():
                            extracted = src.extractfile(member)
                            assert extracted is not None  # a regular file, checked above
                            data = extracted.read()
                            dest = root / rel
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            dest.write_bytes(data)
                            if all((root / m).is_file() for m in MEMBERS):
                                return
                return
    finally:
        deb_tar.stdout.close()
        deb_tar.kill()
        deb_tar.wait()


def run_checkpatch(files: Iterable[Path], *, ignore: Sequence[str] = tuple(IGNORED)) -> list[str]:
    """checkpatch's findings for files: one terse line each, ignored types dropped."""
    script = ensure_checkpatch()
    perl = need_tool("perl", "perl")
    names = [str(Path(f)) for f in files]
    if not names:
        return []
    cmd = [perl, str(script), "--no-tree", "-f", "--terse", "--show-types", "--no-summary", "--strict"]
    if ignore:
        cmd.append(f"--ignore={','.join(ignore)}")
    cmd += names
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=script.parent.parent)
    # Exit status is 1 whenever anything was found; a crash prints no findings.
    out = [ln for ln in proc.stdout.splitlines() if _LINE.match(ln)]
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and not out):
        raise HarnessError(f"checkpatch.pl failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return out


def levels(lines: Iterable[str]) -> dict[str, list[str]]:
    """Findings by level: {"ERROR": [...], "WARNING": [...], "CHECK": [...]}."""
    out: dict[str, list[str]] = {"ERROR": [], "WARNING": [], "CHECK": []}
    for ln in lines:
        m = _LINE.match(ln)
        if m:
            out[m.group("level")].append(ln)
    return out
