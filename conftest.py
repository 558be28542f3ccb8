"""Wire this repository's tests to the harness's pytest plugin.

Installed (`pip install -e .`), the plugin loads through its pytest11 entry
point; from a bare checkout it is loaded here instead, never twice.
"""

from importlib.metadata import entry_points

if "harness" not in {ep.name for ep in entry_points(group="pytest11")}:
    pytest_plugins = ("harness.pytest_plugin",)

# tests/project is another project's tree, run by tests/vm/test_project.py with its own pytest.ini.
collect_ignore = ["tests/project"]
