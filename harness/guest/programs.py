"""Guest-side C programs (images/*.c), compiled static on the host and
carried in every base image: the racer (one process per race role, see
`race.racer` for its command lines and output) and the seed helper.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path

from ..errors import HarnessError
from ..paths import cache_dir, data_dir, need_data
from ..progress import progress
from ..util import Stamp, cached, damage, hash_inputs, need_tool

RACER_SOURCE = data_dir("images") / "racer.c"
RACER_PATH = "/bin/racer"  # where every guest image carries the racer
CFLAGS = ("-O2", "-static", "-Wall", "-Wextra")


@functools.lru_cache(maxsize=None)
def _gcc_version(gcc: str) -> str:
    proc = subprocess.run([gcc, "--version"], capture_output=True, text=True)
    return proc.stdout.split("\n")[0]


def _error_lines(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln.lower()]
    return "\n".join(lines or stderr.strip().splitlines()[-20:])


def build_static(source: Path, name: str) -> Path:
    """Compile a guest program statically, once per source and compiler;
    returns the cached binary `cache_dir()/<name>/<hash>/<name>`."""
    need_data()
    gcc = need_tool("gcc", "gcc")
    out = cache_dir() / name / hash_inputs(source, _gcc_version(gcc), CFLAGS) / name
    stamp_path = out.with_name(f"{name}.json")

    def reuse() -> Path | None:
        if not out.exists():
            return None
        stamp = None
        try:
            stamp = Stamp.from_json(json.loads(stamp_path.read_text()))
        except (OSError, ValueError):
            pass
        damaged = damage(out, stamp)
        if damaged:
            progress(f"{name}: cached {damaged}; rebuilding")
            return None
        return out

    def build(tmp: Path) -> Path:
        progress(f"{name}: building (static)")
        proc = subprocess.run([gcc, *CFLAGS, "-o", str(tmp), str(source)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise HarnessError(f"{name} build failed ({source}):\n{_error_lines(proc.stderr)}")
        # The stamp last; the rename keeps size, mtime and bytes.
        stamp_path.write_text(json.dumps(Stamp.of(tmp).to_json()))
        return out

    return cached(out, out.parent / ".lock", reuse, build, tmp=out.with_name(f"{name}.tmp"))


def build_racer() -> Path:
    """The racer, built static (`build_static`)."""
    return build_static(RACER_SOURCE, "racer")
