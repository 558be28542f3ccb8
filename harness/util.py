"""Small helpers shared by every stage: locks, host tools, hashing, cached artifacts, safe names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from .errors import HarnessError
from .progress import progress

# How long a busy lock is retried quietly before the wait is reported.
LOCK_QUIET_S = 1.0
_LOCK_POLL_S = 0.05


# ---------------------------------------------------------------- locks


def _lock_holder(fd: int) -> int | None:
    """The pid the current holder wrote into the lock file, if any."""
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise cache writers across processes (pytest-xdist workers, CI jobs).

    The holder writes its pid into the lock file, so a waiter can say whom it
    waits for; a wait longer than LOCK_QUIET_S is reported once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + LOCK_QUIET_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_LOCK_POLL_S)
                    continue
                holder = _lock_holder(fd)
                who = f"pid {holder}" if holder is not None else "another process"
                progress(f"waiting for the lock on {path} held by {who}")
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only a courtesy to waiters
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def try_file_lock(path: Path) -> Iterator[bool]:
    """The lock if it is free now (True), else False at once: for work that
    another process doing it makes unnecessary."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- host tools


def need_tool(tool: str, package: str) -> str:
    """Path of a host tool, or one clear line naming the package to install."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise HarnessError(f"{tool} not found; install it with: apt-get install {package}")
    return found


def last_line(output: str | bytes | None) -> str:
    """The last non-blank line of a tool's output, for a one-line error."""
    if output is None:
        return ""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [ln.strip() for ln in output.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_tool(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str | None = None,
    fix: str | None = None,
    cwd: Path | None = None,
    input: str | bytes | None = None,
    text: bool = True,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a host tool, capturing its output; a failure is one HarnessError line
    naming the tool (or `what`), its last stderr line and, if given, the fix.
    check=False leaves the exit status to the caller (a tool that cannot be
    started is still an error)."""
    argv = [str(a) for a in argv]
    what = what or os.path.basename(argv[0])
    try:
        proc = subprocess.run(
            argv, cwd=cwd, input=input, capture_output=True, text=text, env=dict(env) if env is not None else None
        )
    except OSError as exc:
        raise HarnessError(_tool_message(what, f"cannot run {argv[0]}: {exc.strerror}", fix)) from None
    if check and proc.returncode != 0:
        full = tool_out_of_space(what, proc, cwd)
        if full is not None:
            raise full
        detail = last_line(proc.stderr) or last_line(proc.stdout) or f"exit status {proc.returncode}"
        raise HarnessError(_tool_message(what, detail, fix))
    return proc


# The words of ENOSPC/EDQUOT, and apt's own check before it downloads.
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "You don't have enough free space in")


def tool_out_of_space(what: str, proc: subprocess.CompletedProcess, where: Path | None = None) -> HarnessError | None:
    """A host tool that failed on a full disk (apt, tar, make, mksquashfs...):
    the full-disk line, naming the tool and its own words, instead of its
    last line, which is often a summary that hides the cause."""
    out = proc.stderr + "\n" + proc.stdout
    if isinstance(out, bytes):
        out = out.decode(errors="replace")
    said = next((ln.strip() for ln in out.splitlines() if any(t in ln for t in _NO_SPACE_TEXT)), None)
    if said is None:
        return None
    place = f" under {where}" if where is not None else ""
    return HarnessError(
        f"no space left on the device{place}: {what} failed: {said}; "
        "free some (python -m harness cache prune --keep-days N) or point HARNESS_CACHE or the output elsewhere"
    )


def _tool_message(what: str, detail: str, fix: str | None) -> str:
    return f"{what} failed: {detail}" + (f" (try: {fix})" if fix else "")


# ---------------------------------------------------------------- hashing


def hash_inputs(*parts: object) -> str:
    """A short content hash of files (by bytes) and plain values (by repr)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(str(part.name).encode())
            h.update(part.read_bytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- cached artifacts


@dataclass(frozen=True)
class Stamp:
    """What a cached file looked like when it was written: kept in its manifest."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: Path) -> "Stamp":
        st = path.stat()
        stamp = cls(st.st_size, st.st_mtime_ns, file_sha256(path))
        _HASHED[path] = stamp
        return stamp

    @classmethod
    def from_json(cls, data: object) -> "Stamp | None":
        if not isinstance(data, dict):
            return None
        try:
            return cls(int(data["size"]), int(data["mtime_ns"]), str(data["sha256"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Files whose full hash this process already checked, with the stat it had then.
_HASHED: dict[Path, Stamp] = {}


def damage(path: Path, expected: Stamp | None) -> str | None:
    """Why a cached file cannot be trusted, or None if it matches its stamp.

    Cheap on every use: a size or mtime change is caught by stat(); the full
    hash is read once per process per file (and again if its stat changes)."""
    if expected is None:
        return f"{path.name} has no recorded size and hash (cached by an older harness)"
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path.name} is missing"
    if st.st_size != expected.size:
        return f"{path.name} is damaged (size {st.st_size}, expected {expected.size})"
    seen = _HASHED.get(path)
    if seen == Stamp(st.st_size, st.st_mtime_ns, expected.sha256):
        return None
    actual = file_sha256(path)
    if actual != expected.sha256:
        return f"{path.name} is damaged (sha256 {actual[:12]}, expected {expected.sha256[:12]})"
    _HASHED[path] = Stamp(st.st_size, st.st_mtime_ns, actual)
    return None


def stamps_of(root: Path, rels: Sequence[str]) -> dict[str, dict[str, object]]:
    """{relative path: stamp} for a manifest."""
    return {rel: Stamp.of(root / rel).to_json() for rel in rels}


def damage_of(root: Path, recorded: object, rels: Sequence[str]) -> str | None:
    """The first reason one of `rels` under root differs from its recorded stamp."""
    table = recorded if isinstance(recorded, dict) else {}
    for rel in rels:
        reason = damage(root / rel, Stamp.from_json(table.get(rel)))
        if reason:
            return reason
    return None


T = TypeVar("T")


def remove_path(path: Path) -> None:
    """Remove a file, a symlink or a folder tree, if there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def cached(
    final: Path,
    lock: Path,
    reuse: Callable[[], T | None],
    build: Callable[[Path], T],
    *,
    tmp: Path | None = None,
    leftovers: Callable[[], Iterable[Path]] = lambda: (),
    remove: Callable[[Path], None] = remove_path,
    clean_failed: bool = True,
) -> T:
    """The one way a cached artifact is made: under `lock`, `reuse()` is the
    published artifact's value if its recorded key/stamp matches and it is
    intact (reuse says why not, if it was damaged), else None; then it is built.

    With `tmp` (a path next to `final`): `build(tmp)` makes the artifact there,
    its stamp or manifest last, and it is renamed onto `final` (a half-made or
    stale `final` removed first); a build that raises leaves no `tmp` and
    nothing published.  Without `tmp`: `build(final)` makes it in place, and
    writing its marker last is what publishes it (for artifacts whose folder
    holds its own lock, or keeps a failed build's log for the error message).
    clean_failed=False leaves a failed build's `tmp` for the next call's
    `leftovers()` to clear (and report).  `leftovers()`, asked under the lock,
    names what to clear before building (each removed as it is named: a
    generator may say so first)."""
    with file_lock(lock):
        found = reuse()
        if found is not None:
            return found
        for old in leftovers():
            remove(old)
        if tmp is None:
            with writing(final):
                return build(final)
        if tmp.exists() or tmp.is_symlink():
            remove(tmp)
        try:
            with writing(final):
                made = build(tmp)
        except BaseException:
            if clean_failed and (tmp.exists() or tmp.is_symlink()):
                with contextlib.suppress(Exception):
                    remove(tmp)
            raise
        if final.is_dir() and not final.is_symlink():
            remove(final)
        os.replace(tmp, final)
        return made


# ---------------------------------------------------------------- a full disk

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def no_space(path: Path, need: int | None = None) -> HarnessError:
    """The one line a full disk gives: what was being written, how much it
    needed (when known) and how much the file system has left."""
    where = path
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
        free = f"{_mib(st.f_bavail * st.f_frsize)} free there"
    except OSError:
        free = "its free space unknown"
    needed = f"it needed {_mib(need)}, " if need is not None else ""
    return HarnessError(
        f"no space left on the device writing {path} ({needed}{free}); "
        "free some (python -m harness cache prune --keep-days N) or point HARNESS_CACHE or the output elsewhere"
    )


@contextlib.contextmanager
def writing(path: Path, need: int | None = None) -> Iterator[None]:
    """A full disk (ENOSPC, EDQUOT) while this block writes `path` is `no_space`'s one line."""
    try:
        yield
    except OSError as e:
        if e.errno in NO_SPACE:
            raise no_space(path, need) from e
        raise


def write_text(path: Path, text: str) -> None:
    """A report or page written whole or not at all: a full disk leaves the old file (or none)."""
    data = text.encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path, len(data)):
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- names


def safe_name(text: str, keep: str = "._-") -> str:
    """`text` as a name of letters, digits and the characters of `keep` (by
    default: one file name).  Each run of anything else becomes one "_", none is
    left at either end, and what would be empty, "." or ".." is "_"."""
    name = re.sub(f"[^A-Za-z0-9{re.escape(keep)}]+", "_", text).strip("_")
    return name if name.strip(".") else "_"


# ---------------------------------------------------------------- private files


def private_dir(path: Path) -> Path:
    """A folder only the owner can read (it holds private keys); fixes older caches."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """Make an existing file owner-only (older caches were world-readable)."""
    if path.exists() and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write a file atomically, readable by the owner only from its first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with writing(path, len(data)), os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(path)


def usable_dir(path: Path, env_var: str, role: str) -> Path:
    """Create a folder the harness writes into, or one line naming the fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as exc:
        where = f"{env_var}={os.environ[env_var]}" if env_var in os.environ else str(path)
        raise HarnessError(
            f"cannot use {where} as the {role} folder: {exc.strerror}; point {env_var} at a writable folder"
        ) from None
    return path


def read_json_object(path: Path) -> dict:
    """A JSON object from a cache file; {} when it is missing or garbled (the
    caller then rebuilds what the file described)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
