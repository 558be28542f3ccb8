"""Target races on a real guest, through the command line a user types: the
broken-owner control crashes through the generic open operation, another
project's module folder races clean, callers that never reach the module
give no verdict, and a path that is not there after the
setup is refused before anything races."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.tools import REPO, race_cli

MYDRV = REPO / "tests" / "project" / "mydrv"


def race(kernel_spec, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    return race_cli(kernel_spec.name, tmp_path, "--duration", "3", "--seed", "7", *args, timeout=600)


def test_the_broken_owner_control_crashes_through_the_generic_open(kernel_spec, tmp_path):
    proc, report = race(kernel_spec, tmp_path, "--target", "noowner", "--callers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = report["runs"][0]
    assert (run["verdict"], run["control"]) == ("crashed", "fired"), run["problem"]
    assert run["target"] == {"module": "harness_noowner", "caller_ops": ["open"], "control": True}
    assert run["splats"] and run["ops"]["delete_module"]["ok"] >= 1


def test_a_users_module_folder_races_clean_against_opens(kernel_spec, tmp_path):
    proc, report = race(
        kernel_spec, tmp_path, "--target", str(MYDRV), "--op", "open:/dev/mydrv:read=64", "--callers", "2"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = report["runs"][0]
    assert run["verdict"] == "clean" and run["ops"]["delete_module"]["ok"] >= 1
    assert run["ops"]["open"]["ok"] > 0
    # two quick callers and two held ones (race --target's default mix), every one in the module
    assert len(run["reach"]) == 4 and all(r["ok_live"] > 0 for r in run["reach"]), run["reach"]
    assert "--target" in run["repro"] and "open:/dev/mydrv:read=64" in run["repro"]


TWOFISH = "socket:alg:seqpacket:0:skcipher:cbc(twofish)"


def test_a_module_loaded_on_demand_is_reached_from_the_whole_tree(kernel_spec, tmp_path):
    """AF_ALG's family (af_alg, algif_skcipher) and cbc are loaded on demand
    from the guest's module tree, as on a real system: the binds reach twofish."""
    proc, report = race(kernel_spec, tmp_path, "--target", "twofish_generic", "--op", TWOFISH)
    run = report["runs"][0]
    assert proc.returncode == 0 and run["verdict"] == "clean", (run["problem"], proc.stderr[-3000:])
    assert run["ops"]["delete_module"]["ok"] >= 1
    assert len(run["reach"]) == 2 and all(r["ok_live"] > 0 for r in run["reach"]), run["reach"]


def test_callers_that_never_reach_the_module_give_no_verdict_but_unreached(kernel_spec, tmp_path):
    # AF_ALG's family module withheld (modprobe.d: installing it fails): every socket() fails.
    (tmp_path / "pyproject.toml").write_text(
        "[tool.harness.targets.twofish_withheld]\n"
        'module = "twofish_generic"\n'
        'kind = "crypto"\n'
        f'ops = ["{TWOFISH}"]\n'
        "setup = [\"echo 'install af_alg /bin/false' > /etc/modprobe.d/withhold.conf\"]\n"
    )
    proc, report = race(kernel_spec, tmp_path, "--target", "twofish_withheld")
    assert proc.returncode == 1, proc.stderr[-3000:]
    run = report["runs"][0]
    assert run["verdict"] == "unreached" and run["ops"]["delete_module"]["ok"] >= 1, run["problem"]
    assert len(run["reach"]) == 2, run["reach"]  # a quick caller and a held one
    for reach in run["reach"]:
        assert reach["ok_live"] == 0 and reach["calls"] > 0 and list(reach["errors"]) == ["EAFNOSUPPORT"], reach
    assert "never reached the module" in proc.stdout
    assert any(ln.startswith("FAIL ") and "unreached" in ln for ln in proc.stderr.splitlines())


def test_a_protocol_whose_dependency_asks_for_crypto_at_init_loads(kernel_spec, tmp_path):
    """sctp needs libcrc32c, whose init asks the crypto API for crc32c (a
    soft dependency): from the whole tree it loads (before, its link failed:
    "Unknown symbol in module").  It then cannot be unloaded at all: its
    per-netns control sockets (IPv4 and IPv6, sk_alloc() takes a reference
    on their proto's owner) hold it, refcount 2, so the race is refused in
    one line with the kernel's own answer."""
    proc, report = race(kernel_spec, tmp_path, "--target", "sctp", "--op", "socket:inet:stream:132")
    assert "Unknown symbol" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and report is None and len(errors) == 1, proc.stderr[-3000:]
    assert "target sctp cannot be unloaded here" in errors[0] and "in use" in errors[0], errors


def test_a_path_missing_after_the_setup_is_one_line_exit_2(kernel_spec, tmp_path):
    proc, report = race(kernel_spec, tmp_path, "--target", "dummy", "--op", "open:/dev/nope")
    assert proc.returncode == 2 and report is None
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: --op open:/dev/nope: /dev/nope does not exist in the guest with dummy loaded"]
    assert "Traceback" not in proc.stderr
