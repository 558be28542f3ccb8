"""The dependency walk: a kernel row's meta-packages to the exact packages of
one ABI (or, for a row built here, its source package), asked of any `Lookup`
(the catalogue, or a fake in the tests)."""

from __future__ import annotations

import re
from typing import Protocol, Sequence

from ...errors import HarnessError
from ...util import hash_inputs
from ..derive import fragment_digest
from ..table import KernelRow
from .debs import Package, ResolvedKernel, Role
from .mirrors import ARCH, suites_of
from .stanzas import Dep, Fields, depends, one_dep

# What debugkernel.py makes of a source row, in words: part of the release
# string, so a change here is a new kernel (and new module builds).  Change it
# whenever a change there changes the kernel it builds; not for plumbing.
SOURCE_RECIPE = (
    "x86_64_defconfig + kvm_guest.config + fragment, olddefconfig; make all; modules_install strip; "
    "reproducible (fixed KBUILD_BUILD_TIMESTAMP, _VERSION, _USER, _HOST)"
)


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
    hash of what it is built from (source, config fragment, build recipe).  A
    derived kernel has its base's (derive.py): its options and patches are
    its identity in the cache, not in uname -r."""
    assert row.fragments
    # The fragment as it takes effect: a comment or a blank line builds nothing again.
    key = hash_inputs(source_sha256, fragment_digest(row), SOURCE_RECIPE)[:8]
    return f"{upstream}-{row.flavour}-{key}"


def walk_source(row: KernelRow, lookup: Lookup, skip: frozenset[str] = frozenset()) -> ResolvedKernel:
    """A row built from source: the newest version of its source package."""
    assert row.source is not None
    suites = suites_of(row.release)
    versions = [v for v in lookup.versions([row.source], suites).get(row.source, []) if f"{row.source}={v}" not in skip]
    if not versions:
        raise HarnessError(
            f"kernel {row.name}: no {row.source} in Debian {row.release} in the catalogue; "
            "try: harness kernels --refresh"
        )
    version = versions[0]
    (fields,) = _show(lookup, row, [(row.source, version)])
    upstream = version.split("-")[0].split("+")[0]
    if row.series is not None and not re.match(re.escape(row.series) + r"[.-]", upstream):
        raise HarnessError(f"kernel {row.name}: {row.source} in {row.release} is {upstream}, not {row.series}")
    pkg = Package(
        row.source,
        version,
        fields.get("Architecture", "all"),
        int(fields.get("Size", "0") or 0),
        fields.get("SHA256", ""),
        role=Role.SOURCE,
    )
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
            raise HarnessError(
                f"kernel {row.name}: no {meta} in Debian {row.release} in the catalogue; try: harness kernels --refresh"
            )
    for image_meta_ver in metas[row.image_meta]:
        headers_meta_ver = image_meta_ver if image_meta_ver in metas[row.headers_meta] else metas[row.headers_meta][0]
        res = _walk_from(row, lookup, suites, image_meta_ver, headers_meta_ver)
        if not skip.intersection(res.pins):
            return res
    raise HarnessError(
        f"kernel {row.name}: the archive serves no version of {row.image_meta} in "
        f"{row.release} whole (failed: {', '.join(sorted(skip))}); "
        "try: harness kernels --refresh"
    )


def _walk_from(
    row: KernelRow, lookup: Lookup, suites: Sequence[str], image_meta_ver: str, headers_meta_ver: str
) -> ResolvedKernel:
    meta_fields = _show(lookup, row, [(row.image_meta, image_meta_ver), (row.headers_meta, headers_meta_ver)])
    image = one_dep(meta_fields[0], r"linux-image-.*")
    headers = one_dep(meta_fields[1], r"linux-headers-.*")
    pinned = _pin(lookup, suites, [image, headers], image_meta_ver)
    (image_pkg, image_ver), (headers_pkg, headers_ver) = pinned
    abi = _abi_of(image_pkg)
    if headers_pkg.removeprefix("linux-headers-") != abi or image_ver != headers_ver:
        raise HarnessError(
            f"kernel {row.name}: image {image_pkg} {image_ver} and headers {headers_pkg} "
            f"{headers_ver} differ; refusing a mismatched pair (try: harness kernels --refresh)"
        )
    if row.series is not None and not re.match(re.escape(row.series) + r"[.-]", abi):
        raise HarnessError(
            f"kernel {row.name}: {row.image_meta} in {row.release} now points at {abi}, not {row.series}"
        )
    image_fields, headers_fields = _show(lookup, row, pinned)
    abi_re = re.escape(abi)
    wanted: list[tuple[Role, Dep]] = [
        (Role.IMAGE, Dep(image_pkg, image_ver)),
        *[(Role.BINARY, d) for d in depends(image_fields, "linux-binary-" + abi_re)],
        *[(Role.MODULES, d) for d in depends(image_fields, "linux-modules-" + abi_re)],
        *[(Role.BASE, d) for d in depends(image_fields, "linux-base-" + abi_re)],
        (Role.HEADERS, Dep(headers_pkg, headers_ver)),
        (Role.HEADERS_COMMON, one_dep(headers_fields, r"linux-headers-.*-common(-rt)?")),
        (Role.KBUILD, one_dep(headers_fields, r"linux-kbuild-.*")),
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
            raise HarnessError(
                f"no {d.name} in Debian {' '.join(suites)} in the catalogue; try: harness kernels --refresh"
            )
        out.append((d.name, version))
    return out


def _show(lookup: Lookup, row: KernelRow, pins: Sequence[tuple[str, str]]) -> list[Fields]:
    found = lookup.stanzas(pins)
    missing = [f"{n}={v}" for n, v in pins if (n, v) not in found]
    if missing:
        raise HarnessError(
            f"kernel {row.name}: {', '.join(missing)} not in the catalogue (try: harness kernels --refresh)"
        )
    return [found[p] for p in pins]
