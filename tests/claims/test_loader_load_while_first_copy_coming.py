"""Loader fact (issue 10, item 6a/6c, staggered): a second load of a module
whose first load is still in its init (initstate `coming`), through raw
finit_module and through kmod's modprobe (the path request_module takes).

Measured on 5.10, 6.1, 6.12 and 7.2: kmod's modprobe takes only `live` in
/sys/module/NAME/initstate for "already loaded", so a late modprobe makes the
syscall too and, like a raw finit_module, returns after the first copy's init
is done (EEXIST, or since 6.5 the first load's result for the same file;
modprobe turns EEXIST into 0).  request_module therefore does not return
while the module it asked for is still COMING."""

from __future__ import annotations

import pytest
from loaderlib import DOCUMENTED, LOAD_PATHS, OK, SCHEME, counts, idempotent_finit, ms_summary, one_load, single_load

from harness.guest.programs import RACER_PATH
from harness.race.racer import parse_role_output

pytestmark = pytest.mark.fact  # the matrix shows these as facts, not claims

ROUNDS = 3
INIT_DELAY_MS = 1000  # the first copy stays COMING this long
KNOBS = (("init_delay_ms", INIT_DELAY_MS),)
POLLS = 200000  # reads of initstate while waiting for `coming` (no fork per read)


def _round(g, load: str, name: str) -> dict:
    """First load in the background (raw finit_module, always); as soon as
    initstate reads `coming`, the late load through `load`; the state when
    it returned."""
    g.sh(f"/sbin/rmmod {name}")
    state = f"/sys/module/{name}/initstate"
    first = one_load(g, "finit", name, KNOBS).command(RACER_PATH)
    script = (
        f"{first} >/tmp/first.json & pid=$!; s=; i=0; "
        f'while [ "$s" != coming ] && [ $i -lt {POLLS} ]; do '
        f"read s 2>/dev/null <{state}; i=$((i+1)); done; "
        f'echo "STATE before $s"; '
        f"{one_load(g, load, name, KNOBS).command(RACER_PATH)}; "
        f'read s 2>/dev/null <{state} || s=gone; echo "STATE after $s"; '
        f'wait $pid; echo "FIRST $(tail -n 1 /tmp/first.json)"'
    )
    res = g.vm.ssh.run(script, timeout=60)
    lines = res.stdout.splitlines()
    states = dict(ln.split()[1:3] for ln in lines if ln.startswith("STATE ") and len(ln.split()) == 3)
    late = parse_role_output(res.stdout, role="loader", exit_status=res.exit_status, stderr=res.stderr)
    first_out = parse_role_output(
        "\n".join(ln.removeprefix("FIRST ") for ln in lines if ln.startswith("FIRST ")), role="loader"
    )
    after = g.sh(f"grep -c '^{name} ' /proc/modules; cat {state}", check=False).stdout.split()
    return {
        "late": list(single_load(late)),
        "state_before": states.get("before", "?"),
        "state_after": states.get("after", "?"),
        "first": list(single_load(first_out)),
        "role_errors": [e for e in (late.error, first_out.error) if e],
        "instances_after": int(after[0]) if after and after[0].isdigit() else -1,
        "initstate_after": after[1] if len(after) > 1 else "gone",
    }


@pytest.mark.parametrize("load", LOAD_PATHS)
def test_loader_load_while_first_copy_coming(load, claim_guest, record_property):
    """3 rounds: a raw finit_module of the provider (init_delay_ms=1000) in
    the background; the moment initstate reads `coming`, a second load
    through `load`.  Records the late load's outcome and latency and whether
    it returned while the first copy was still COMING.  Asserts on every
    kernel: the late load started during COMING; its outcome is in the
    documented set; the first load got 0; afterwards one LIVE instance; the
    late load (either path) does not return before the first copy's init is
    done; a late raw finit_module gets EEXIST before 6.5, 0 since (measured
    on 5.10, 6.1 / 6.12, 7.2)."""
    g = claim_guest(SCHEME, knobs=KNOBS)
    name = g.m(SCHEME).spec.provider_names[0]
    rounds = [_round(g, load, name) for _ in range(ROUNDS)]
    measured = {
        "load": load,
        "rounds": ROUNDS,
        "init_delay_ms": INIT_DELAY_MS,
        "late_outcomes": counts([r["late"][0] for r in rounds]),
        "late_ms": ms_summary([r["late"][1] for r in rounds]),
        "returned_while_coming": sum(1 for r in rounds if r["state_after"] == "coming"),
        "first_ms": ms_summary([r["first"][1] for r in rounds]),
        "detail": rounds,
    }
    record_property("measured", measured)

    for i, r in enumerate(rounds):
        where = f"{load} round {i}: {r}"
        assert not r["role_errors"], where
        assert r["state_before"] == "coming", f"the late load did not start during COMING: {where}"
        assert r["late"][0] in DOCUMENTED[load], f"outcome outside {sorted(DOCUMENTED[load])}: {where}"
        assert r["first"][0] == OK, f"the first load failed: {where}"
        assert r["instances_after"] == 1 and r["initstate_after"] == "live", where
        assert r["state_after"] == "live", f"the late load returned during the first copy's init: {where}"
        if load == "finit":
            want = OK if idempotent_finit(g.release) else "EEXIST"
            assert r["late"][0] == want, f"{g.release}: the late finit_module should get {want}: {where}"
