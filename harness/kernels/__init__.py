"""Real Debian kernels, fetched as packages and unpacked into the cache, and
kernels built elsewhere (`--kernel PATH`), laid out the same way.

The kernel table (table.py) names them; the harness's own apt (apt/) resolves
a row to exact packages and downloads them; unpack.py unpacks them into a
private folder per ABI, so several kernels live side by side whatever the
host's distribution; `KernelFiles` (files.py) is what the later stages take.
"""

from .files import KernelFiles
from .repair import damage_of_kernel
from .table import DEFAULT_KERNEL, DEFAULT_RELEASE, ROWS, KernelRow, get_spec, parse_specs
from .unpack import fetch, status

__all__ = [
    "DEFAULT_KERNEL",
    "DEFAULT_RELEASE",
    "KernelFiles",
    "KernelRow",
    "ROWS",
    "damage_of_kernel",
    "fetch",
    "get_spec",
    "parse_specs",
    "status",
]
