"""The nightly workflow runs one job per row of the kernel table."""

import json
import re

from harness.kernels import ROWS
from tests.tools import REPO


def test_nightly_has_one_job_per_kernel_spec():
    text = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    m = re.search(r"^\s+kernel: (\[.*\])\s*$", text, re.M)
    assert m, "no kernel matrix line in nightly.yml"
    assert json.loads(m.group(1)) == list(ROWS)


def _module_matrix() -> str:
    return (REPO / ".github" / "workflows" / "module-matrix.yml").read_text()


def test_module_matrix_is_reusable_with_the_documented_inputs():
    text = _module_matrix()
    assert re.search(r"^on:\n  workflow_call:\n    inputs:\n", text, re.M)
    for name in ("kernels", "pytest-args", "working-directory", "harness-repository", "harness-ref"):
        assert re.search(rf"^      {name}:\n", text, re.M), name


def test_module_matrix_takes_a_json_list_or_a_comma_string(tmp_path):
    """The plan job's script, run as the workflow runs it."""
    import os
    import subprocess
    import sys

    script = re.search(r"<<'PY'[^\n]*\n(.*?)\n\s*PY\n", _module_matrix(), re.S).group(1)
    lines = script.splitlines()
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines if ln.strip())
    src = "\n".join(ln[indent:] for ln in lines)
    for given, want in (
        ('["6.1", "6.12-debug"]', ["6.1", "6.12-debug"]),
        ("6.1, 6.12 ,", ["6.1", "6.12"]),
        ("sid", ["sid"]),
    ):
        out = subprocess.run(
            [sys.executable, "-c", src],
            env={**os.environ, "KERNELS": given},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.startswith("kernels=") and json.loads(out.removeprefix("kernels=")) == want
