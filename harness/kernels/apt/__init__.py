"""The harness's own apt: a kernel row to exact Debian packages and their
downloads (mirrors.py, stanzas.py, debs.py, walk.py, catalogue.py,
downloads.py).  It imports the kernel table, never the other way round."""

from .catalogue import Catalogue, update
from .debs import Deb, Package, ResolvedKernel, Role
from .downloads import debs_of, download, download_newest, fetch, resolve
from .mirrors import KEYRING, RELEASE_FALLBACK, SUITES, Mirrors, host_mirrors, suites_of
from .walk import SOURCE_RECIPE, source_release

__all__ = [
    "Catalogue",
    "Deb",
    "KEYRING",
    "Mirrors",
    "Package",
    "RELEASE_FALLBACK",
    "ResolvedKernel",
    "Role",
    "SOURCE_RECIPE",
    "SUITES",
    "debs_of",
    "download",
    "download_newest",
    "fetch",
    "host_mirrors",
    "resolve",
    "source_release",
    "suites_of",
    "update",
]
