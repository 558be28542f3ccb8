"""Tooling only the tests use: checkpatch.pl on rendered modules, a headless
browser's screenshot of a page."""
