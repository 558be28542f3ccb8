"""The key a CI cache of the harness's cache folder is saved under, per kernel:
`python -m harness cachekey SPEC` prints `harness-SPEC-HASH`.

HASH covers what the cached downloads and builds of that kernel are made of:
the exact packages the spec resolves to in today's lists (pins and ABI), the
build root's suite and package list, and for a kernel built here from source
its config fragment's bytes and the build recipe.  A night whose key matches
the last saved one restores a cache in which nothing is downloaded or built
again; a new kernel upload changes the pins, hence the key (the workflow then
restores the newest older cache of that spec by prefix and saves a new one).
The archive's URL is left out: it differs between hosts, not the contents.
"""

from __future__ import annotations

import hashlib
import json

from . import apt, buildroot
from .table import KernelRow


def key_inputs(row: KernelRow, res: apt.ResolvedKernel) -> dict[str, object]:
    """What the key hashes (JSON-serialisable; no host paths or URLs)."""
    suite = buildroot.root_suite(row.release)
    packages = buildroot.PACKAGES[suite] + (buildroot.KERNEL_BUILD_PACKAGES if row.source else ())
    fragment = b"".join(path.read_bytes() for path in row.fragment_paths)
    return {
        "spec": row.name,
        "abi": res.abi,
        "version": res.version,
        "pins": list(res.pins),
        "root": {"suite": suite, "packages": list(packages)},
        "source": {
            "package": row.source,
            "recipe": apt.SOURCE_RECIPE,
            "fragment_sha256": hashlib.sha256(fragment).hexdigest(),
        }
        if row.source
        else None,
    }


def cache_key(row: KernelRow, res: apt.ResolvedKernel) -> str:
    text = json.dumps(key_inputs(row, res), sort_keys=True)
    return f"harness-{row.name}-{hashlib.sha256(text.encode()).hexdigest()[:24]}"
