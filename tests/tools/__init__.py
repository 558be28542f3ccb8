"""Tooling only the tests use: checkpatch.pl on rendered modules, a headless
browser's screenshot of a page."""

from pathlib import Path

# The repository the tests run from (harness.paths.CHECKOUT is None when the
# harness under test is an installed copy).
REPO = Path(__file__).resolve().parents[2]
