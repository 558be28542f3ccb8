"""The nightly workflow runs one job per kernel spec of the catalogue."""

import json
import re

from harness.kernels import catalogue
from tests.tools import REPO


def test_nightly_has_one_job_per_kernel_spec():
    text = (REPO / ".github" / "workflows" / "nightly.yml").read_text()
    m = re.search(r"^\s+kernel: (\[.*\])\s*$", text, re.M)
    assert m, "no kernel matrix line in nightly.yml"
    assert json.loads(m.group(1)) == list(catalogue.ROWS)
