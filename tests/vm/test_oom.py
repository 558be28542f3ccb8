"""A module that allocates without bound (tests/project/leaky: a megabyte
per read, never freed) runs its guest out of memory: the race ends with a
verdict, crashed with the OOM killer's report, not a hang."""

from __future__ import annotations

from tests.tools import REPO, race_cli

LEAKY = REPO / "tests" / "project" / "leaky"


def test_a_guest_out_of_memory_is_a_crash_with_the_oom_report(kernel_spec, tmp_path):
    # 1024 MiB of guest: about a thousand reads.  --no-hold: quick reads only.
    proc, report = race_cli(
        kernel_spec.name,
        tmp_path,
        "--target",
        str(LEAKY),
        "--op",
        "open:/dev/leaky:read=1",
        "--no-hold",
        "--duration",
        "60",
        "--seed",
        "1",
        timeout=600,
    )
    assert report is not None, proc.stderr[-3000:]
    run = report["runs"][0]
    assert run["verdict"] == "crashed", (run["verdict"], run["problem"], proc.stderr[-3000:])
    oom = [s for s in run["splats"] if s["kind"] == "oom"]
    assert oom and oom[0]["title"].startswith("out of memory: ") and "invoked oom-killer" in oom[0]["title"], run[
        "splats"
    ]
    assert proc.returncode == 1
