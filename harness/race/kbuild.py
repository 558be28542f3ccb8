"""Render the guest kernel modules from kmods/ templates and build them.

One scheme gives one module set: a bus core `P_core` and providers
`P_prov0..N-1` (names and protocol: kmods/README.md).  `render()` is pure
(Jinja2 only); `build()` runs kbuild in the kernel's build root
(buildroot.py) and caches the .ko files by content (templates + parameters +
kernel release + build root).
"""

from __future__ import annotations

import json
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Union

from ..errors import HarnessError
from ..kernels import KernelFiles, modbuild
from ..paths import cache_dir, data_dir, need_data
from ..progress import progress
from ..util import damage_of, file_lock, hash_inputs, stamps_of
from . import schemes

KMODS_DIR = data_dir("kmods")

SCHEMES: tuple[str, ...] = tuple(schemes.SCHEMES)
KNOBS: tuple[str, ...] = ("exit_delay_ms", "call_delay_us", "init_delay_ms", "exit_tail_ms")
MAX_PROVIDERS = 16
BUS_COUNTS = (1, 2)
MAKE_JOBS = 2


@dataclass(frozen=True)
class ModuleSetSpec:
    """What to render: the scheme and the template parameters."""

    scheme: str
    providers: int = 2
    buses: int = 1

    def __post_init__(self) -> None:
        schemes.get_scheme(self.scheme)
        for attr in ("providers", "buses"):
            val = getattr(self, attr)
            if not isinstance(val, int) or isinstance(val, bool):
                raise HarnessError(f"{attr} must be an integer, got {val!r}")
        if not 1 <= self.providers <= MAX_PROVIDERS:
            raise HarnessError(f"providers must be 1..{MAX_PROVIDERS}, got {self.providers}")
        if self.buses not in BUS_COUNTS:
            raise HarnessError(f"buses must be 1 or 2, got {self.buses}")

    @property
    def row(self) -> schemes.Scheme:
        return schemes.SCHEMES[self.scheme]

    @property
    def prefix(self) -> str:
        return self.row.prefix

    @property
    def core(self) -> str:
        return f"{self.prefix}_core"

    @property
    def provider_names(self) -> list[str]:
        return [f"{self.prefix}_prov{i}" for i in range(self.providers)]

    @property
    def ctl_device(self) -> str:
        return f"/dev/{self.prefix}_ctl"

    @property
    def fs_name(self) -> str:
        return f"{self.prefix}fs"

    def bus_order(self, index: int) -> list[int]:
        """Provider i registers on buses (0, 1) if i is even, (1, 0) if odd."""
        return schemes.bus_order(index, self.buses)


def validate_knobs(knobs: Mapping[str, object]) -> dict[str, int]:
    """Provider knobs as {name: non-negative int}; anything else is a HarnessError."""
    out: dict[str, int] = {}
    for name, val in knobs.items():
        if name not in KNOBS:
            raise HarnessError(f"unknown knob {name!r}; valid: {', '.join(KNOBS)}")
        if isinstance(val, bool) or not isinstance(val, int):
            if isinstance(val, str) and re.fullmatch(r"\s*\d+\s*", val):
                val = int(val)
            else:
                raise HarnessError(f"knob {name} must be a non-negative integer, got {val!r}")
        if val < 0:
            raise HarnessError(f"knob {name} must be a non-negative integer, got {val}")
        if val > 0xFFFFFFFF:
            raise HarnessError(f"knob {name} too large (uint): {val}")
        out[name] = val
    return out


KnobsInput = Union[Mapping[str, object], Iterable[tuple[str, object]]]


class Knobs(Mapping[str, int]):
    """Provider knobs: an immutable, hashable {name: non-negative int} in name
    order, made only through `validate_knobs`.  `args()` is the one place a
    knob is written as `name=value` (module parameters, modprobe.d options,
    --knob arguments, reports)."""

    __slots__ = ("_items",)
    _items: tuple[tuple[str, int], ...]

    def __init__(self, knobs: KnobsInput = ()) -> None:
        given = dict(knobs.items() if isinstance(knobs, Mapping) else knobs)
        self._items = tuple(sorted(validate_knobs(given).items()))

    def __getitem__(self, name: str) -> int:
        for k, v in self._items:
            if k == name:
                return v
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Knobs({dict(self._items)!r})"

    def args(self) -> list[str]:
        """`name=value` per knob, in name order: ['call_delay_us=1000', 'exit_delay_ms=200']."""
        return [f"{k}={v}" for k, v in self._items]


def template_files(spec: ModuleSetSpec) -> list[Path]:
    """Every template a module set is rendered from (for hashing)."""
    need_data()
    files = sorted((KMODS_DIR / "common").glob("*.j2"))
    files += sorted((KMODS_DIR / spec.row.template).glob("*.j2"))
    return files


def _magic(text: str) -> str:
    return f"{zlib.crc32(text.encode()) & 0xFFFFFFFF:08x}"


def _env():
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - dependency declared in pyproject
        raise HarnessError("jinja2 not found; install it with: pip install jinja2") from exc
    need_data()
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(KMODS_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(spec: ModuleSetSpec, outdir: Path) -> list[Path]:
    """Write the Kbuild tree of a module set into outdir; returns the files written."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    env = _env()
    p = spec.prefix
    base = {
        "P": p,
        "PU": p.upper(),
        "scheme": spec.scheme,
        "rwsem": spec.row.uses_rwsem,
        "deferred": spec.row.gate is schemes.Gate.AFTER_DELETE,
        "sorted": spec.row.lock_order is schemes.LockOrder.SORTED,
        "reads_state": spec.row.reach is schemes.Reach.STATE,
        "buses": spec.buses,
        "providers": spec.providers,
        "provider_names": spec.provider_names,
        "core": spec.core,
        "fs_magic": _magic(spec.fs_name),
    }
    jobs: list[tuple[str, str, dict]] = [
        ("common/Kbuild.j2", "Kbuild", {}),
        ("common/bus.h.j2", f"{p}_bus.h", {}),
        ("common/core.c.j2", f"{p}_core_main.c", {}),
        (f"{spec.row.template}/bus.c.j2", f"{p}_core_bus.c", {}),
    ]
    for i, name in enumerate(spec.provider_names):
        jobs.append(
            (
                "common/prov.c.j2",
                f"{name}.c",
                {
                    "index": i,
                    "name": name,
                    "N": name,
                    "NU": name.upper(),
                    "bus_order": spec.bus_order(i),
                    "prov_fs_magic": _magic(name + "fs"),
                },
            )
        )
    written = []
    for template, target, extra in jobs:
        text = env.get_template(template).render(**base, **extra)
        path = outdir / target
        path.write_text(text)
        written.append(path)
    return written


@dataclass(frozen=True)
class BuiltModules:
    """The .ko files of one module set for one kernel release."""

    spec: ModuleSetSpec
    release: str
    ko_files: list[Path]
    core: str
    providers: list[str]
    prefix: str
    build_dir: Path
    log: str = field(repr=False, default="")
    cached: bool = False

    @property
    def warnings(self) -> list[str]:
        """Compiler/modpost lines with 'warning:' (tests treat any as a failure)."""
        return [ln for ln in self.log.splitlines() if "warning:" in ln.lower()]

    def ko(self, module: str) -> Path:
        for path in self.ko_files:
            if path.stem == module:
                return path
        raise HarnessError(f"no module {module!r} in this build; have: {', '.join(p.stem for p in self.ko_files)}")


def _error_lines(log: str, limit: int = 30) -> str:
    lines = [ln for ln in log.splitlines() if re.search(r"error|Error|ERROR|undefined|not found", ln)]
    if not lines:
        lines = log.splitlines()[-limit:]
    return "\n".join(lines[:limit])


def build(kernel_files: KernelFiles, spec: ModuleSetSpec, *, jobs: int = MAKE_JOBS) -> BuiltModules:
    """Build (or fetch from the cache) the module set for a kernel, in the
    build root of the kernel's Debian release."""
    if not isinstance(spec, ModuleSetSpec):
        raise HarnessError(f"build() needs a ModuleSetSpec, got {type(spec).__name__}")
    release = kernel_files.release
    identity = modbuild.build_identity(kernel_files)
    key = hash_inputs(
        Path(__file__),
        *[str(t.relative_to(KMODS_DIR)) for t in template_files(spec)],
        *template_files(spec),
        spec.scheme,
        spec.providers,
        spec.buses,
        release,
        identity,
    )
    root = cache_dir() / "kmods" / key
    manifest = root / "manifest.json"
    names = [spec.core, *spec.provider_names]
    label = f"{spec.scheme} x{spec.providers} buses={spec.buses} for {release}"
    ko_names = [f"{n}.ko" for n in names]
    with file_lock(cache_dir() / "kmods" / f"{key}.lock"):
        if manifest.is_file():
            data = json.loads(manifest.read_text())
            kos = [root / "src" / k for k in ko_names]
            damaged = damage_of(root / "src", data.get("files"), ko_names)
            if damaged:
                progress(f"modules {label}: cached {damaged}; rebuilding")
            elif data.get("release") == release and data.get("build_root") == identity:
                progress(f"modules {label}: cached ({key})")
                return BuiltModules(
                    spec=spec,
                    release=release,
                    ko_files=kos,
                    core=spec.core,
                    providers=spec.provider_names,
                    prefix=spec.prefix,
                    build_dir=root,
                    log=(root / "build.log").read_text(),
                    cached=True,
                )
        if root.exists():
            shutil.rmtree(root)
        src = root / "src"
        render(spec, src)
        progress(f"modules {label}: building with {identity}")
        proc = modbuild.compile_in(kernel_files, src, jobs)
        log = proc.stdout
        (root / "build.log").write_text(log)
        if proc.returncode != 0:
            raise HarnessError(f"module build failed ({label}); log: {root / 'build.log'}\n{_error_lines(log)}")
        kos = [src / f"{n}.ko" for n in names]
        missing = [k.name for k in kos if not k.is_file()]
        if missing:
            raise HarnessError(f"module build produced no {', '.join(missing)}; log: {root / 'build.log'}")
        manifest.write_text(
            json.dumps(
                {"release": release, "build_root": identity, "modules": names, "files": stamps_of(src, ko_names)}
            )
        )
        built = BuiltModules(
            spec=spec,
            release=release,
            ko_files=kos,
            core=spec.core,
            providers=spec.provider_names,
            prefix=spec.prefix,
            build_dir=root,
            log=log,
        )
        if built.warnings:
            progress(f"modules {label}: built with {len(built.warnings)} warning(s), see {root / 'build.log'}")
        else:
            progress(f"modules {label}: built")
        return built
