"""A kernel's module tree as the guest sees it: which modules the kernel has
(loadable or built in), a module set's closure under modules.dep, and the
guest's own modules.dep made on the host for the modules it carries."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import HarnessError
from ..kernels import KernelFiles
from ..paths import cache_dir
from ..util import need_tool, run_tool


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _modules_dep(kernel: KernelFiles) -> dict[str, list[str]]:
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    return deps


def _module_names(kernel: KernelFiles) -> tuple[set[str], set[str]]:
    """The kernel's loadable modules and its built-in ones, by name."""
    loadable = {_module_name(p) for p in _modules_dep(kernel)}
    builtin_file = kernel.modules_dir / "modules.builtin"
    builtin = {_module_name(p) for p in builtin_file.read_text().split()} if builtin_file.is_file() else set()
    return loadable, builtin


def module_state(kernel: KernelFiles, name: str) -> str | None:
    """ "module" if the kernel has `name` as a loadable module, "builtin" if
    built in, None if neither."""
    loadable, builtin = _module_names(kernel)
    name = name.replace("-", "_")
    return "module" if name in loadable else "builtin" if name in builtin else None


def check_kmods(kernel: KernelFiles, names: tuple[str, ...]) -> tuple[str, ...]:
    """The kernel's own modules asked for by name (`--kmod minix`), normalised;
    a name the kernel has neither as a module nor built in is bad input."""
    if not names:
        return ()
    loadable, builtin = _module_names(kernel)
    out = []
    for raw in names:
        name = raw.strip().replace("-", "_")
        if name.endswith((".ko", ".ko.xz", ".ko.zst")) or "/" in name:
            raise HarnessError(f"--kmod takes a module name (minix), not a file: {raw!r}; use --module for .ko files")
        if name not in loadable and name not in builtin:
            raise HarnessError(f"kernel {kernel.name} ({kernel.release}) has no module {raw!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


def module_closure(kernel: KernelFiles, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to the modules dir) of the modules and all their deps."""
    deps = _modules_dep(kernel)
    by_name = {_module_name(p): p for p in deps}
    out: list[str] = []
    for name in names:
        path = by_name.get(name)
        if path is None:
            continue  # built in
        for p in [path, *deps[path]]:
            if p not in out:
                out.append(p)
    return out


def _depmod(kernel: KernelFiles, modules: tuple[Path, ...], in_tree: list[str]) -> dict[str, bytes]:
    """modules.dep & co. for the guest's module set, made on the host (host
    and guest run the same kmod), which saves the guest a depmod at boot."""
    need_tool("depmod", "kmod")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        mdir = Path(tmp) / "lib" / "modules" / kernel.release
        for rel in in_tree:
            (mdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (mdir / rel).symlink_to(kernel.modules_dir / rel)
        (mdir / "extra").mkdir(parents=True, exist_ok=True)
        for ko in modules:
            (mdir / "extra" / ko.name).symlink_to(ko.resolve())
        for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
            shutil.copy(kernel.modules_dir / meta, mdir / meta)
        run_tool(["depmod", "-b", tmp, kernel.release], what="depmod for the guest's modules")
        return {p.name: p.read_bytes() for p in sorted(mdir.glob("modules.*"))}
