"""Loader fact (issue 10, item 6b/6c): a load of a module whose old copy is
still GOING (delete_module is running its exit), through raw finit_module and
through kmod's modprobe (the path request_module takes).  Measured per
kernel: the outcome, how long the load took, and whether it returned while
the old copy was still GOING.

Kernel history: 6.2 "Don't wait for GOING modules" (backported to 6.1 and
5.10 stable) makes such a load fail with EBUSY at once instead of waiting for
the old copy to go; kmod's modprobe sees `going` in /sys/module/NAME/initstate,
tries the load and fails."""

from __future__ import annotations

import pytest
from claimlib import racer
from loaderlib import DOCUMENTED, LOAD_PATHS, OK, SCHEME, counts, ms_summary, one_load, single_load

from harness.guest.programs import RACER_PATH
from harness.race.racer import parse_role_output

pytestmark = pytest.mark.fact  # the matrix shows these as facts, not claims

ROUNDS = 3
EXIT_DELAY_MS = 1000  # the old copy stays GOING this long
KNOBS = (("exit_delay_ms", EXIT_DELAY_MS),)
POLLS = 200000  # reads of initstate while waiting for `going` (no fork per read)


def _round(g, load: str, name: str) -> dict:
    """rmmod in the background; as soon as initstate reads `going`, one load;
    then the state again, rmmod's status; then a load once the old copy is gone."""
    state = f"/sys/module/{name}/initstate"
    script = (
        f"/sbin/rmmod {name} & pid=$!; s=; i=0; "
        f'while [ "$s" != going ] && [ $i -lt {POLLS} ]; do '
        f"read s 2>/dev/null <{state}; i=$((i+1)); done; "
        f'echo "STATE before $s"; '
        f"{one_load(g, load, name, KNOBS).command(RACER_PATH)}; "
        f'read s 2>/dev/null <{state} || s=gone; echo "STATE after $s"; '
        f'wait $pid; echo "STATE rmmod $?"'
    )
    res = g.vm.ssh.run(script, timeout=60)
    states = dict(
        line.split()[1:3] for line in res.stdout.splitlines() if line.startswith("STATE ") and len(line.split()) == 3
    )
    during = parse_role_output(res.stdout, role="loader", exit_status=res.exit_status, stderr=res.stderr)
    outcome, ms = single_load(during)
    again = racer(g, one_load(g, load, name, KNOBS))  # also the loaded copy for the next round
    outcome_after, ms_after = single_load(again)
    return {
        "outcome": outcome,
        "ms": ms,
        "state_before": states.get("before", "?"),
        "state_after": states.get("after", "?"),
        "rmmod_status": states.get("rmmod", "?"),
        "role_error": during.error,
        "reload_after_gone": [outcome_after, ms_after],
    }


@pytest.mark.parametrize("load", LOAD_PATHS)
def test_loader_load_while_old_copy_going(load, claim_guest, record_property):
    """3 rounds: the provider (exit_delay_ms=1000) is removed with rmmod in the
    background; the moment /sys/module initstate reads `going`, one load
    (racer `loader --count 1`).  Records its outcome and latency and whether
    it returned while the old copy was still GOING.  Asserts on every kernel:
    the load started during GOING; its outcome is in the documented set; it
    never returned 0 while the old copy was still GOING (two copies at
    once); the rmmod completed; a load after the old copy is gone gives 0;
    and (kernel history, measured on 5.10, 6.1, 6.12, 7.2) the load does not
    wait for the old copy: it fails while it is still GOING, raw
    finit_module with EBUSY."""
    g = claim_guest(SCHEME, knobs=KNOBS)
    name = g.m(SCHEME).spec.provider_names[0]
    rounds = [_round(g, load, name) for _ in range(ROUNDS)]
    ms = [r["ms"] for r in rounds]
    measured = {
        "load": load,
        "rounds": ROUNDS,
        "exit_delay_ms": EXIT_DELAY_MS,
        "outcomes": counts([r["outcome"] for r in rounds]),
        "load_ms": ms_summary(ms),
        "returned_while_going": sum(1 for r in rounds if r["state_after"] == "going"),
        "reload_after_gone": counts([r["reload_after_gone"][0] for r in rounds]),
        "detail": rounds,
    }
    record_property("measured", measured)

    for i, r in enumerate(rounds):
        where = f"{load} round {i}: {r}"
        assert r["state_before"] == "going", f"the load did not start during GOING: {where}"
        assert r["role_error"] is None, where
        assert r["outcome"] in DOCUMENTED[load], f"outcome outside {sorted(DOCUMENTED[load])}: {where}"
        assert not (r["outcome"] == OK and r["state_after"] == "going"), f"loaded while GOING: {where}"
        assert r["rmmod_status"] == "0", where
        assert r["reload_after_gone"][0] == OK, f"no load after the old copy went: {where}"
        # 6.2 "Don't wait for GOING modules", in every kernel measured (5.10, 6.1, 6.12, 7.2).
        assert r["state_after"] == "going", f"the load waited for the old copy to go: {where}"
        if load == "finit":
            assert r["outcome"] == "EBUSY", where
