"""Kernels your way: a kernel built here from source (a row with a
``source``) plus config options and patches of the user's.

A derived kernel is a row of its own: its base row's fields, the options and
patches, and a name that says both (``6.12-debug+k1a2b3c4d``).  Its identity
(`derived_id`) hashes the *effective* options (parsed, so comments and
whitespace change nothing) and the patches' bytes in the order they apply.

It is built from its base's object tree, never from scratch: the base's
source and object trees in the build root are the lower layers of overlay
mounts whose upper layers are the derived kernel's own (in its cache
folder), so a patch to one driver recompiles that driver.  Its `uname -r` is
the base's and its build is reproducible (fixed build timestamp, version,
user and host): a change that touches only modules leaves vmlinux the
base's, byte for byte, build id and all.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import HarnessError
from ..paths import cache_dir, data_dir
from ..project import table as harness_table
from .kconfig import parse_config
from .table import ROWS, KernelRow, parse_specs

_OPTION = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(y|m|n|-?[0-9]+|0x[0-9a-fA-F]+|\"[^\"\n]*\")$")
# The build's fixed identity: the same inputs give the same vmlinux.
REPRODUCIBLE_ENV = (
    "KBUILD_BUILD_TIMESTAMP=Thu Jan  1 00:00:00 UTC 1970",
    "KBUILD_BUILD_VERSION=1",
    "KBUILD_BUILD_USER=harness",
    "KBUILD_BUILD_HOST=harness",
)


def parse_option(text: str) -> tuple[str, str]:
    """`CONFIG_X=y|m|n|NUMBER|"string"`, or `# CONFIG_X is not set`."""
    text = text.strip()
    unset = re.fullmatch(r"#\s*(CONFIG_[A-Za-z0-9_]+) is not set", text)
    if unset:
        return unset.group(1), "n"
    m = _OPTION.match(text)
    if not m:
        raise HarnessError(
            f'--kconfig {text!r}: not an option; give CONFIG_NAME=y|m|n|NUMBER|"STRING" or a fragment file'
        )
    return m.group(1), m.group(2)


def read_options(items: Iterable[str]) -> tuple[str, ...]:
    """--kconfig items (options or fragment files) as `CONFIG_X=v` lines, later ones winning."""
    out: dict[str, str] = {}
    for item in items:
        path = Path(item)
        if "=" not in item and not item.startswith("#"):
            own = data_dir("kconfigs") / f"{item}.config"
            if not path.is_file() and "/" not in item and own.is_file():
                path = own  # one of the harness's own fragments, by name: --kconfig debuginfo
            if not path.is_file():
                raise HarnessError(
                    f"--kconfig {item}: no such fragment file (or give CONFIG_NAME=VALUE, or the name of one of "
                    f"the harness's own: {', '.join(sorted(p.stem for p in data_dir('kconfigs').glob('*.config')))})"
                )
            try:
                text = path.read_text()
            except OSError as e:
                raise HarnessError(f"--kconfig {item}: cannot read it: {e.strerror}") from None
            for line in text.splitlines():
                if line.strip() and (not line.lstrip().startswith("#") or "is not set" in line):
                    key, val = parse_option(line)
                    out[key] = val
            continue
        key, val = parse_option(item)
        out[key] = val
    return tuple(f"{k}={v}" for k, v in out.items())


def read_patches(items: Iterable[str]) -> tuple[Path, ...]:
    """--patch items: a file, or a folder applied by its `series` file or in name order."""
    out: list[Path] = []
    for item in items:
        path = Path(item).resolve()
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            series = path / "series"
            if series.is_file():
                names = [
                    ln.split()[0] for ln in series.read_text().splitlines() if ln.strip() and not ln.startswith("#")
                ]
                missing = [n for n in names if not (path / n).is_file()]
                if missing:
                    raise HarnessError(f"--patch {item}: its series names {missing[0]}, which is not there")
                out += [path / n for n in names]
            else:
                found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".patch", ".diff"))
                if not found:
                    raise HarnessError(f"--patch {item}: no .patch or .diff files and no series file")
                out += found
        else:
            raise HarnessError(f"--patch {item}: no such file or folder")
    return tuple(out)


def fragment_options(row: KernelRow) -> dict[str, str]:
    """The row's fragments parsed, in order, later ones winning."""
    wanted: dict[str, str] = {}
    for path in row.fragment_paths:
        try:
            wanted.update(parse_config(path.read_text()))
        except OSError as e:
            raise HarnessError(f"kernel {row.name}: cannot read its config fragment {path}: {e.strerror}") from None
    return wanted


def effective_options(row: KernelRow) -> dict[str, str]:
    """The row's fragments, then its own options, parsed: what the build asks for."""
    wanted = fragment_options(row)
    for line in row.options:
        key, val = parse_option(line)
        wanted[key] = val
    return wanted


def fragment_digest(row: KernelRow) -> str:
    """The row's fragments as they take effect (comments and layout change nothing)."""
    return options_digest(effective_options(replace(row, options=())))


def options_digest(options: dict[str, str]) -> str:
    """A hash of options as they take effect: sorted, comments and layout gone."""
    return hashlib.sha256("".join(f"{k}={v}\n" for k, v in sorted(options.items())).encode()).hexdigest()


def derived_id(options: Sequence[str], patches: Sequence[Path]) -> str:
    """What a derived kernel adds to its base: its options as they take effect
    and its patches' bytes in order."""
    h = hashlib.sha256()
    h.update(options_digest(dict(parse_option(o) for o in options)).encode())
    for p in patches:
        try:
            h.update(hashlib.sha256(p.read_bytes()).digest())
        except OSError as e:
            raise HarnessError(f"--patch {p}: cannot read it: {e.strerror}") from None
    return "k" + h.hexdigest()[:8]


def derive(base: KernelRow, options: Sequence[str] = (), patches: Sequence[Path] = (), name: str = "") -> KernelRow:
    """`base` plus options and patches; `base` itself when there are none.
    A packaged kernel (or a local tree) cannot be changed: one line."""
    if not options and not patches:
        return base
    if base.source is None or base.local is not None or base.base is not None:
        what = "a local tree" if base.local is not None else "a derived kernel" if base.base else "a packaged kernel"
        raise HarnessError(
            f"--kconfig and --patch change a kernel built here from source (6.12-debug, ...); {base.name} is {what}"
        )
    ident = derived_id(options, patches)
    return replace(
        base, name=name or f"{base.name}+{ident}", base=base.name, options=tuple(options), patches=tuple(patches)
    )


def derive_all(rows: Sequence[KernelRow], options: Sequence[str], patches: Sequence[Path]) -> list[KernelRow]:
    return [derive(r, options, patches) for r in rows]


def ident_of(row: KernelRow) -> str:
    """The derived identity of a row ("" for a row that is no derived kernel)."""
    return derived_id(row.options, row.patches) if row.base is not None else ""


def record(row: KernelRow) -> dict[str, Any]:
    """What a built derived kernel's cache folder says of it (`harness kernels` lists it)."""
    return {"name": row.name, "base": row.base, "options": list(row.options), "patches": [str(p) for p in row.patches]}


def built() -> list[dict[str, Any]]:
    """The derived kernels built in this cache, by name."""
    out = []
    for path in sorted((cache_dir() / "kernels").glob("*+k*/derived.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and (path.parent / ".unpacked.json").is_file():
            out.append({**doc, "release": path.parent.name.rsplit("+", 1)[0]})
    return sorted(out, key=lambda d: str(d.get("name")))


def overlay_dir(row: KernelRow, abi: str) -> Path:
    """Where a derived kernel keeps its upper layers (its own changes to the base's trees)."""
    return cache_dir() / "kernels" / f"{abi}+{ident_of(row)}" / "overlay"


# ---------------------------------------------------------------- kernels a project names


def definitions(project: Path) -> dict[str, KernelRow]:
    """The derived kernels a project defines in its pyproject.toml:

        [tool.harness.kernels.uhid-debug]
        base = "6.12-debug"
        kconfig = ["CONFIG_HID=m", "CONFIG_UHID=m"]   # options or fragment files
        patches = ["patches/"]                         # files or folders, relative to the file

    usable wherever a kernel spec is."""
    path, table = harness_table(project, "kernels")
    out: dict[str, KernelRow] = {}
    for name, d in table.items():
        where = f"{path} [tool.harness.kernels.{name}]"
        if not isinstance(d, dict) or set(d) - {"base", "kconfig", "patches"} or "base" not in d:
            raise HarnessError(f"{where}: wants base = SPEC and optionally kconfig = [...], patches = [...]")
        if name in ROWS or "," in name or "/" in name:
            raise HarnessError(f"{where}: the name is a spec of the kernel table, or not a name")
        base = ROWS.get(str(d["base"]))
        if base is None:
            raise HarnessError(f"{where}: base {d['base']!r} is no kernel of the table")
        kconfig = [str(k) if "=" in str(k) else str(project / str(k)) for k in d.get("kconfig", [])]
        patches = read_patches(str(project / str(p)) for p in d.get("patches", []))
        out[name] = derive(base, read_options(kconfig), patches, name=name)
    return out


def parse_kernels(text: str, project: Path | None = None) -> list[KernelRow]:
    """`--kernel` text: the kernel table's specs and PATHs (table.parse_specs),
    and the kernels the project defines by name."""
    defs = definitions(project or Path.cwd())
    names = [n.strip() for n in text.split(",")]
    try:
        if not defs or not any(n in defs for n in names):
            return parse_specs(text)
        return [row for n in names for row in ([defs[n]] if n in defs else parse_specs(n))]
    except HarnessError as e:
        if not defs:
            raise
        raise HarnessError(f"{e}; or one this project names: {', '.join(defs)}") from None
