"""Each scheme's modules on a real kernel: the issue's "Done when" list.

One guest per scheme (``test_scheme``) runs the checks in order, each with its
own assertion message:

1. core + providers load with kmod's modprobe, serve ``lookup-call``, mount and
   unmount ``Pfs``;
2. a held provider (ctl ``hold`` on an open fd, then a mounted ``Pfs``) refuses
   ``rmmod`` with the kernel's in-use error (EAGAIN) and keeps working
   (``unsafe``: the negative control takes no reference, so ``hold`` does not
   pin);
3. while ``rmmod P_prov0`` sleeps ``exit_delay_ms`` in exit, a
   ``lookup-call P_prov1`` on the same bus waits for it with the rwsem gate and
   does not with refcount;
4. the core unloads after its providers and survives 3 load/unload cycles;
6. an open ``/dev/P_prov0`` (fops.owner) refuses rmmod until it is closed.

Check 5, the unsafe oops, kills its guest and gets one of its own
(``test_unsafe_oopses_when_provider_is_unloaded_mid_call``).

Guest-side notes: kmod's tools by full path (busybox's applets would win
otherwise), busybox's ``rmmod`` only where its strerror() text is wanted (kmod
says "is in use" without the errno).  ``read()`` of ``/dev/P_ctl`` ignores the
file position, so results are read with one ``dd bs=64 count=1`` (``head``,
``cat`` and ``read`` would loop).  busybox ``date`` has no ``%N``: gate waits
are timed with ``/proc/uptime`` (10 ms resolution).
"""

from __future__ import annotations

import re

import pytest

from harness.guest.splat import new_splats
from harness.guest.vm import poll_until
from harness.race import kbuild
from harness.race.schemes import SCHEMES

EXIT_DELAY_MS = 2000
GATE_MIN_S = 1.0  # a gated lookup waits for most of EXIT_DELAY_MS
CYCLES = 3
EAGAIN_TEXT = "Resource temporarily unavailable"


def _modules(kernel, scheme: str) -> kbuild.BuiltModules:
    built = kbuild.build(kernel, kbuild.ModuleSetSpec(scheme))
    assert not built.warnings, f"{scheme}: build warnings:\n" + "\n".join(built.warnings)
    return built


def _sh(vm, cmd: str, what: str, timeout: float = 60):
    """Run cmd; on failure the assertion says which check and shows the output."""
    res = vm.ssh.run(cmd, timeout=timeout)
    assert res.exit_status == 0, (
        f"{what}: exit {res.exit_status}\n$ {cmd}\n--- stdout\n{res.stdout}--- stderr\n{res.stderr}"
    )
    return res


def _lookup(p: str, name: str, bus: int | None = None) -> str:
    """Shell snippet: lookup-call on one fd, then read that fd's result."""
    arg = name if bus is None else f"{name} {bus}"
    return f"exec 3<>/dev/{p}_ctl && echo -n 'lookup-call {arg}' >&3 && dd bs=64 count=1 <&3 2>/dev/null; exec 3>&-"


def _load(p: str, providers: list[str], **knobs0: int) -> str:
    args0 = " ".join(f"{k}={v}" for k, v in knobs0.items())
    cmds = [f"/sbin/modprobe {p}_core", f"/sbin/modprobe {providers[0]} {args0}".rstrip()]
    cmds += [f"/sbin/modprobe {n}" for n in providers[1:]]
    return " && ".join(cmds)


def _unload(p: str, providers: list[str]) -> str:
    return f"/sbin/rmmod {' '.join(providers)} && /sbin/rmmod {p}_core"


def _loaded(vm, p: str) -> set[str]:
    res = vm.ssh.run("cut -d' ' -f1 /proc/modules", check=True)
    return {m for m in res.stdout.split() if m.startswith(p + "_")}


def _check_load_call_mount_unload(vm, p: str, fs: str, providers: list[str]) -> None:
    _sh(vm, _load(p, providers), "1. load core + providers")
    assert _loaded(vm, p) == {f"{p}_core", *providers}, "1. not all modules are listed in /proc/modules"
    for i, name in enumerate(providers):
        res = _sh(vm, _lookup(p, name), f"1. lookup-call {name}")
        assert res.stdout == f"{i}\n", f"1. lookup-call {name} must return the provider's index {i}"
    res = _sh(
        vm,
        f"mkdir -p /mnt/x && mount -t {fs} -o backend={providers[0]} none /mnt/x && "
        f"grep ' /mnt/x ' /proc/mounts && umount /mnt/x",
        f"1. mount/umount {fs}",
    )
    assert f"/mnt/x {fs}" in res.stdout, f"1. {fs} did not show up in /proc/mounts"
    res = vm.ssh.run(f"echo -n 'lookup-call {p}_nosuch' > /dev/{p}_ctl")
    assert res.exit_status != 0 and "No such file or directory" in res.stderr, (
        f"1. a missing provider must give ENOENT, got {res.exit_status} {res.stderr!r}"
    )
    _sh(vm, _unload(p, providers), "1. unload providers and core")
    assert _loaded(vm, p) == set(), "1. modules left after rmmod"


def _check_held_refuses_rmmod(vm, p: str, fs: str, providers: list[str], record) -> None:
    """2. ctl hold, then a mounted Pfs: rmmod fails with EAGAIN, provider keeps working."""
    name = providers[0]
    _sh(vm, _load(p, providers), "2. load")
    res = vm.ssh.run(
        f"exec 4<>/dev/{p}_ctl && echo -n 'hold {name}' >&4 || exit 90; "
        f"/sbin/rmmod {name}; echo kmod=$?; busybox rmmod {name}; echo busybox=$?; "
        f"{_lookup(p, name)}"
    )
    assert res.exit_status == 0, f"2. hold {name} failed: {res.stderr}"
    record(f"{p}_rmmod_held_kmod", res.stderr.splitlines()[0] if res.stderr else "")
    assert "kmod=1" in res.stdout and "busybox=1" in res.stdout, f"2. rmmod of a held {name} succeeded:\n{res.stdout}"
    assert f"Module {name} is in use" in res.stderr, f"2. kmod rmmod error text: {res.stderr!r}"
    assert f"can't unload module '{name}': {EAGAIN_TEXT}" in res.stderr, (
        f"2. delete_module must fail with EAGAIN: {res.stderr!r}"
    )
    assert res.stdout.endswith("0\n"), f"2. lookup-call {name} while held: {res.stdout!r}"
    # The fd is closed now: the hold is gone.
    assert _loaded(vm, p) >= {name}, f"2. {name} vanished while held"

    res = vm.ssh.run(
        f"mount -t {fs} -o backend={name} none /mnt/x || exit 90; "
        f"busybox rmmod {name}; echo busybox=$?; {_lookup(p, name)}; umount /mnt/x"
    )
    assert res.exit_status == 0, f"2. mount {fs} or umount failed: {res.stderr}"
    assert "busybox=1" in res.stdout and EAGAIN_TEXT in res.stderr, (
        f"2. rmmod of {name} behind a mounted {fs} must fail with EAGAIN: {res.stdout!r} {res.stderr!r}"
    )
    assert res.stdout.endswith("0\n"), f"2. lookup-call {name} while mounted: {res.stdout!r}"
    _sh(vm, _unload(p, providers), "2. unload once the mount is gone")


def _check_unsafe_hold_does_not_pin(vm, p: str, providers: list[str]) -> None:
    """Negative control: unsafe's get takes no module reference."""
    name = providers[0]
    _sh(vm, _load(p, providers), "2. load")
    res = vm.ssh.run(f"exec 4<>/dev/{p}_ctl && echo -n 'hold {name}' >&4 || exit 90; /sbin/rmmod {name}; echo kmod=$?")
    assert res.exit_status == 0 and "kmod=0" in res.stdout, (
        f"2. unsafe: hold must not pin {name} (negative control): {res.stdout!r} {res.stderr!r}"
    )
    _sh(vm, f"/sbin/rmmod {' '.join(providers[1:])} && /sbin/rmmod {p}_core", "2. unload the rest")


def _gate_wait(vm, p: str, providers: list[str]) -> float:
    """3. Seconds a lookup-call of provider 1 takes while rmmod of provider 0
    sleeps EXIT_DELAY_MS in its exit (same bus)."""
    _sh(vm, _load(p, providers, exit_delay_ms=EXIT_DELAY_MS), "3. load with exit_delay_ms")
    up = "cut -d' ' -f1 /proc/uptime"
    res = _sh(
        vm,
        f"/sbin/rmmod {providers[0]} & rm_pid=$!; "
        f"{poll_until(f'grep -qx going /sys/module/{providers[0]}/initstate', 60)} || exit 97; t0=$({up}); "
        f"echo -n 'lookup-call {providers[1]}' > /dev/{p}_ctl; rc=$?; t1=$({up}); "
        f"wait $rm_pid; echo $? $rc $t0 $t1",
        "3. rmmod + lookup",
    )
    rm_rc, rc, t0, t1 = res.stdout.split()
    assert rm_rc == "0", f"3. rmmod {providers[0]} failed: {res.stderr}"
    assert rc == "0", f"3. lookup-call {providers[1]} during the unload failed: {res.stderr}"
    _sh(vm, f"/sbin/rmmod {' '.join(providers[1:])} && /sbin/rmmod {p}_core", "3. unload the rest")
    return float(t1) - float(t0)


def _check_core_cycles(vm, p: str, providers: list[str]) -> None:
    """4. core (with the gate for rwsem schemes) loads and unloads again and again."""
    for cycle in range(CYCLES):
        _sh(vm, _load(p, providers), f"4. cycle {cycle}: load")
        res = _sh(vm, _lookup(p, providers[-1]), f"4. cycle {cycle}: lookup-call")
        assert res.stdout == f"{len(providers) - 1}\n", f"4. cycle {cycle}: lookup result {res.stdout!r}"
        _sh(vm, _unload(p, providers), f"4. cycle {cycle}: unload")
        assert _loaded(vm, p) == set(), f"4. cycle {cycle}: modules left"


def _check_open_device_pins(vm, p: str, providers: list[str]) -> None:
    """6. /dev/P_prov0 open (fops.owner = THIS_MODULE): rmmod fails until closed."""
    name = providers[0]
    _sh(vm, _load(p, providers), "6. load")
    res = vm.ssh.run(
        f"exec 5</dev/{name} || exit 90; dd bs=16 count=1 <&5 2>/dev/null; "
        f"busybox rmmod {name}; echo busybox=$?; exec 5<&-; "
        f"/sbin/rmmod {name}; echo closed=$?"
    )
    assert res.exit_status == 0, f"6. open /dev/{name} failed: {res.stderr}"
    assert res.stdout.startswith("0\n"), f"6. read of /dev/{name}: {res.stdout!r}"
    assert "busybox=1" in res.stdout and EAGAIN_TEXT in res.stderr, (
        f"6. rmmod with /dev/{name} open must fail with EAGAIN: {res.stdout!r} {res.stderr!r}"
    )
    assert "closed=0" in res.stdout, f"6. rmmod after closing /dev/{name} failed: {res.stderr!r}"
    _sh(vm, f"/sbin/rmmod {' '.join(providers[1:])} && /sbin/rmmod {p}_core", "6. unload the rest")


@pytest.mark.parametrize("scheme", kbuild.SCHEMES)
def test_scheme(scheme, kernel, vm_factory, record_property):
    built = _modules(kernel, scheme)
    spec = built.spec
    p, fs, providers = spec.prefix, spec.fs_name, spec.provider_names
    vm = vm_factory(modules=tuple(built.ko_files))
    start = vm.console_size()

    _check_load_call_mount_unload(vm, p, fs, providers)
    if SCHEMES[scheme].negative_control:
        _check_unsafe_hold_does_not_pin(vm, p, providers)
    else:
        _check_held_refuses_rmmod(vm, p, fs, providers, record_property)
        wait = _gate_wait(vm, p, providers)
        record_property("gate_wait_s", round(wait, 2))
        print(
            f"{scheme}: lookup-call {providers[1]} during rmmod {providers[0]} "
            f"(exit_delay_ms={EXIT_DELAY_MS}) took {wait:.2f}s"
        )
        if scheme == "refcount":
            assert wait < GATE_MIN_S, f"3. refcount has no gate; the lookup waited {wait:.2f}s"
        else:
            assert wait >= GATE_MIN_S, (
                f"3. {scheme}: the gate must hold the bus write lock across the slow exit; "
                f"the lookup waited only {wait:.2f}s"
            )
    _check_core_cycles(vm, p, providers)
    _check_open_device_pins(vm, p, providers)
    assert new_splats(vm.console_text(), start) == [], "no splat expected"  # also checked by the plugin


@pytest.mark.expect_splat
def test_unsafe_oopses_when_provider_is_unloaded_mid_call(kernel, vm_factory):
    """5. un_prov0's op sleeps 3 s in its own text; rmmod clears its state and frees that text under it.
    The sleep is the window rmmod must land in: on a loaded runner the SSH
    round trips from seeing the looker in the call to rmmod's return took
    more than the 300 ms this used to be, the call ended first, and nothing
    crashed."""
    built = _modules(kernel, "unsafe")
    vm = vm_factory(modules=tuple(built.ko_files))
    start = vm.console_size()
    _sh(vm, "/sbin/modprobe un_core && /sbin/modprobe un_prov0 call_delay_us=3000000", "5. load")
    # echo is the shell's builtin: the shell itself is the task in the call.
    looker = vm.ssh.start("echo $$ > /tmp/looker.pid; echo -n 'lookup-call un_prov0' > /dev/un_ctl")
    in_call = vm.wait_guest(r"grep -q '\[un_prov0\]' /proc/$(cat /tmp/looker.pid)/stack", timeout=30)
    assert in_call, "5. the looker never got inside un_prov0's call"
    res = vm.ssh.run("/sbin/rmmod un_prov0", timeout=30)
    assert res.exit_status == 0, f"5. unsafe takes no reference, rmmod must succeed: {res.stderr!r}"
    assert vm.wait_console(r"---\[ end trace", timeout=20, start=start), "5. no end of a crash report on the console"
    try:
        looker.wait(timeout=10)
    except Exception:
        pass  # the looking task died in the oops; its channel may never close
    splats = new_splats(vm.console_text(), start)
    crashes = [s for s in splats if s.kind in {"oops", "bug", "gpf"}]
    assert crashes, f"5. no oops/bug/gpf splat; got {[(s.kind, s.title) for s in splats]}"
    s = crashes[0]
    text = s.title + "\n" + "\n".join(s.lines)
    assert "un_prov0" in text or "page fault" in text, f"5. the splat is not about un_prov0: {s.title}"
    # Either way the module's comment names: the wakeup meets the cleared state
    # while un_prov0 is still going (its flag "-"), or its freed text after it.
    going = any(re.search(r"\bun_prov0\([A-Z]*-\)", ln) for ln in s.lines)
    assert going or s.last_unloaded == "un_prov0", (
        f"5. un_prov0 neither going nor last unloaded: {s.modules}, last unloaded {s.last_unloaded}"
    )
