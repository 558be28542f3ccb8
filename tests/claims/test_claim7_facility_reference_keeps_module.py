"""Claim 7 (Adam Richter): a higher-level facility's reference, such as an
open file descriptor, keeps the module; the module needs no try_module_get."""

from claimlib import op_dict, scheme_for

from harness.race.racer import RoleSpec, parse_role_output


def test_claim7_facility_reference_keeps_module(claim_guest, record_property):
    """An open /dev/P_prov0 (fops.owner = THIS_MODULE, no try_module_get in
    the provider) keeps the module: delete_module fails with EAGAIN while the
    fd is open and succeeds once it is closed.  Measures both delete_module
    outcomes and a read of the device while the unload was refused."""
    scheme = scheme_for("claim7", "rwsem")
    g = claim_guest(scheme, knobs=())
    name = g.m(scheme).spec.provider_names[0]
    unload = RoleSpec("unloader", name=name, ko=g.ko(scheme), count=1, duration_ms=10000).command()
    res = g.sh(
        f"exec 5</dev/{name} || exit 90; {unload}; echo '--'; "
        f"dd bs=16 count=1 <&5 2>/dev/null; echo '--'; exec 5<&-; {unload}",
        check=False,
    )
    parts = res.stdout.split("--\n")
    open_u = parse_role_output(parts[0], role="unloader")
    closed_u = parse_role_output(parts[-1], role="unloader") if len(parts) == 3 else open_u
    measured = {
        "scheme": scheme,
        "while_open": op_dict(open_u, "delete_module"),
        "read_while_open": parts[1].strip() if len(parts) == 3 else None,
        "after_close": op_dict(closed_u, "delete_module"),
    }
    record_property("measured", measured)
    assert res.exit_status == 0 and len(parts) == 3, f"open/read failed: {res.stdout!r} {res.stderr!r}"
    assert measured["while_open"]["errors"] == {"EAGAIN": 1}, (
        f"delete_module with /dev/{name} open: {measured['while_open']}"
    )
    assert measured["read_while_open"] == "0", measured
    assert measured["after_close"]["ok"] == 1, f"delete_module after close: {measured['after_close']}"
