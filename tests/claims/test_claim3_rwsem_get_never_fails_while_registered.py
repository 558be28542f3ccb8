"""Claim 3 (Adam Richter): under the rwsem scheme there is no failure path for
the get; a module with a holder cannot be removed."""

from claimlib import op_dict, racer, scheme_for

from harness.race.racer import RoleSpec, parse_role_output

N = 2000


def test_claim3_rwsem_get_never_fails_while_registered(claim_guest, record_property):
    """rwsem: with the provider loaded and not unloading, 2000 lookup-calls all
    succeed; with a `hold` on an open control fd, delete_module fails with the
    in-use errno (EAGAIN) and the provider keeps serving lookups.  Measures the
    lookups' outcomes and latency, the unload's errno while held, and 200
    lookups afterwards."""
    scheme = scheme_for("claim3", "rwsem")
    g = claim_guest(scheme, knobs=())
    m = g.m(scheme)
    name, ctl = m.spec.provider_names[0], m.spec.ctl_device
    look = racer(g, RoleSpec("looker", name=name, ctl=ctl, check_result=0, count=N, duration_ms=60000))
    unloader = RoleSpec("unloader", name=name, ko=g.ko(scheme), count=1, duration_ms=10000)
    res = g.sh(
        f"exec 4<>{ctl} && echo -n 'hold {name}' >&4 || exit 90; "
        f"{unloader.command()}; "
        f"grep -c '^{name} ' /proc/modules",
        check=False,
    )
    unload = parse_role_output(res.stdout, role="unloader")
    still_loaded = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    after = racer(g, RoleSpec("looker", name=name, ctl=ctl, check_result=0, count=200, duration_ms=30000))
    measured = {
        "scheme": scheme,
        "lookups": op_dict(look, "lookup"),
        "held_delete_module": op_dict(unload, "delete_module"),
        "loaded_after_held_unload": still_loaded == "1",
        "lookups_after": op_dict(after, "lookup"),
    }
    record_property("measured", measured)
    assert measured["lookups"]["ok"] == N and measured["lookups"]["total"] == N, measured["lookups"]
    assert res.exit_status == 0, f"hold failed: {res.stderr}"
    errs = measured["held_delete_module"]["errors"]
    assert measured["held_delete_module"]["ok"] == 0 and set(errs) <= {"EAGAIN", "EWOULDBLOCK"} and errs, (
        f"{scheme}: delete_module of a held provider: {measured['held_delete_module']}"
    )
    assert measured["loaded_after_held_unload"], f"{name} vanished while held"
    assert measured["lookups_after"]["ok"] == 200, measured["lookups_after"]
