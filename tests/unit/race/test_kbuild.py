"""Fast checks of the module templates and their renderer (no compiler)."""

from __future__ import annotations

import re
import subprocess

import pytest

from harness.errors import HarnessError
from harness.race import kbuild
from harness.race.kbuild import SCHEMES, ModuleSetSpec, render, validate_knobs
from harness.race.schemes import SCHEME_ROWS, Gate, LockOrder, Reach
from harness.race.schemes import SCHEMES as ROWS

EVERY_MODULE_SET = [
    ModuleSetSpec(scheme, providers=n, buses=b) for scheme in SCHEMES for n in (1, 2, 3) for b in (1, 2)
]


def _code(text: str) -> str:
    """C text without comments."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _ids(spec: ModuleSetSpec) -> str:
    return f"{spec.scheme}-p{spec.providers}-b{spec.buses}"


def test_prefixes_match_readme():
    readme = (kbuild.KMODS_DIR / "README.md").read_text()
    prefixes = [row.prefix for row in SCHEME_ROWS]
    assert len(set(prefixes)) == len(prefixes), "two schemes share a prefix"
    for row in SCHEME_ROWS:
        assert re.search(rf"`{re.escape(row.name)}`\s*\|\s*`{row.prefix}`", readme), row.name


@pytest.mark.parametrize("spec", EVERY_MODULE_SET, ids=_ids)
def test_render_every_scheme(spec, tmp_path):
    files = render(spec, tmp_path)
    p = spec.prefix
    names = {f.name for f in files}
    assert names == {
        "Kbuild",
        f"{p}_bus.h",
        f"{p}_core_main.c",
        f"{p}_core_bus.c",
        *(f"{n}.c" for n in spec.provider_names),
    }
    for f in files:
        text = f.read_text()
        assert "{{" not in text and "{%" not in text, f.name
        assert "\n    " not in text.replace("\n     *", ""), f"{f.name}: spaces instead of tabs"
        if f.suffix == ".c":
            assert text.startswith("// SPDX-License-Identifier: GPL-2.0\n")
            assert '#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt' in text
    kb = (tmp_path / "Kbuild").read_text()
    assert f"obj-m += {p}_core.o" in kb
    assert f"{p}_core-y := {p}_core_main.o {p}_core_bus.o" in kb
    for name in spec.provider_names:
        assert f"obj-m += {name}.o" in kb

    core = (tmp_path / f"{p}_core_main.c").read_text()
    assert f'.name\t= "{p}_ctl"' in core
    assert f'.name\t\t\t= "{p}fs"' in core
    assert 'MODULE_LICENSE("GPL")' in core and "MODULE_DESCRIPTION(" in core
    for cmd in ("lookup-call", "hold", "release"):
        assert f'"{cmd}"' in core
    assert f"#define {p.upper()}_NR_BUSES\t{spec.buses}" in (tmp_path / f"{p}_bus.h").read_text()

    for i, name in enumerate(spec.provider_names):
        prov = (tmp_path / f"{name}.c").read_text()
        assert f'MODULE_ALIAS_FS("{name}fs");' in prov
        assert f'.name\t\t\t= "{name}fs"' in prov
        assert f'.name\t= "{name}"' in prov
        assert ".owner\t= THIS_MODULE" in prov
        assert "try_module_get" not in _code(prov)
        for knob in kbuild.KNOBS:
            assert f"module_param({knob}, uint, 0644);" in prov
        order = re.search(r"_bus_order\[\] = \{ ([0-9, ]+) \}", prov).group(1)
        expect = list(range(spec.buses)) if i % 2 == 0 else list(range(spec.buses))[::-1]
        assert [int(x) for x in order.split(",")] == expect


@pytest.mark.parametrize("scheme", SCHEMES)
def test_only_the_kasan_control_reads_provider_state_instead_of_calling(scheme, tmp_path):
    spec = ModuleSetSpec(scheme)
    render(spec, tmp_path)
    core = _code((tmp_path / f"{spec.prefix}_core_main.c").read_text())
    reads = ROWS[scheme].reach is Reach.STATE
    assert ("read_state(drv)" in core) == reads
    assert ("drv->ops->call(drv)" in core) != reads


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_get_rule(scheme, tmp_path):
    spec = ModuleSetSpec(scheme)
    render(spec, tmp_path)
    bus = (tmp_path / f"{spec.prefix}_core_bus.c").read_text()
    code = _code(bus)
    assert 'request_module("%s", name)' in code
    if scheme == "refcount":
        assert "try_module_get(drv->owner)" in code and "-ENODEV" in code
        assert "ftrace" not in code
    elif ROWS[scheme].negative_control:
        assert "module_get" not in code and "module_put" not in code
    else:
        assert "__module_get(drv->owner)" in code
        assert "try_module_get(drv->owner)" not in code
        for fn in (
            "rwsems_wlock",
            "get_driver_by_name_modprobe",
            "__x64_sys_delete_module",
            "__ia32_sys_delete_module",
            "FTRACE_OPS_FL_IPMODIFY",
            "within_module(parent_ip, THIS_MODULE)",
            "register_kprobe",
            "struct rwsem_chain",
        ):
            assert fn in bus or fn in (tmp_path / f"{spec.prefix}_bus.h").read_text(), fn
        if spec.row.gate is Gate.IN_EXIT:
            assert "rwsems_element_release(&mc->rwsems, el)" in code
            assert "WARN_ONCE" in code
        else:
            assert "rwsems_element_release" not in code
        if spec.row.lock_order is LockOrder.SORTED:
            assert "rwsems_add_sorted(&mc->rwsems, el);" in code
        else:
            assert "rwsems_add_sorted" not in code
            assert "list_add_tail(&el->list, &mc->rwsems);" in code


def test_render_is_deterministic(tmp_path):
    spec = ModuleSetSpec("rwsem", providers=3, buses=2)
    a = {f.name: f.read_bytes() for f in render(spec, tmp_path / "a")}
    b = {f.name: f.read_bytes() for f in render(spec, tmp_path / "b")}
    assert a == b


def test_spec_names():
    spec = ModuleSetSpec("rwsem-deferred", providers=3)
    assert spec.prefix == "rwd"
    assert spec.core == "rwd_core"
    assert spec.provider_names == ["rwd_prov0", "rwd_prov1", "rwd_prov2"]
    assert spec.ctl_device == "/dev/rwd_ctl"
    assert spec.fs_name == "rwdfs"


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(scheme="bogus"), "refcount, rwsem, rwsem-deferred, unsafe"),
        (dict(scheme="refcount", providers=0), "providers"),
        (dict(scheme="refcount", providers=-1), "providers"),
        (dict(scheme="refcount", providers=1000), "providers"),
        (dict(scheme="refcount", providers="2"), "integer"),
        (dict(scheme="refcount", providers=True), "integer"),
        (dict(scheme="refcount", buses=3), "buses"),
        (dict(scheme="refcount", buses=0), "buses"),
    ],
)
def test_bad_spec(kwargs, needle):
    with pytest.raises(HarnessError) as exc:
        ModuleSetSpec(**kwargs)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_spec_before_any_compile(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("compiler ran")

    monkeypatch.setattr(subprocess, "run", boom)  # any compiler run, wherever from
    with pytest.raises(HarnessError):
        kbuild.build(object(), ModuleSetSpec("nope"))


def test_build_rejects_non_spec():
    with pytest.raises(HarnessError):
        kbuild.build(object(), {"scheme": "refcount"})


def test_validate_knobs():
    assert validate_knobs({}) == {}
    assert validate_knobs({"exit_delay_ms": 10, "call_delay_us": 0, "init_delay_ms": "5"}) == {
        "exit_delay_ms": 10,
        "call_delay_us": 0,
        "init_delay_ms": 5,
    }


def test_knobs_are_validated_ordered_by_name_and_hashable():
    knobs = kbuild.Knobs({"exit_delay_ms": 3, "call_delay_us": "7"})
    assert knobs.args() == ["call_delay_us=7", "exit_delay_ms=3"]
    assert dict(knobs) == {"call_delay_us": 7, "exit_delay_ms": 3} and list(knobs) == ["call_delay_us", "exit_delay_ms"]
    assert knobs == kbuild.Knobs([("call_delay_us", 7), ("exit_delay_ms", 3)])
    assert hash(knobs) == hash(kbuild.Knobs({"call_delay_us": 7, "exit_delay_ms": 3}))
    assert knobs != kbuild.Knobs({"call_delay_us": 7}) and kbuild.Knobs().args() == []
    with pytest.raises(AttributeError):
        knobs.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(HarnessError, match="unknown knob 'exit_delay'"):
        kbuild.Knobs({"exit_delay": 1})


@pytest.mark.parametrize(
    "knobs, needle",
    [
        ({"exit_delay": 1}, "unknown knob"),
        ({"exit_delay_ms": -1}, "non-negative"),
        ({"call_delay_us": 1.5}, "non-negative integer"),
        ({"call_delay_us": "abc"}, "non-negative integer"),
        ({"call_delay_us": True}, "non-negative integer"),
        ({"init_delay_ms": 2**33}, "too large"),
    ],
)
def test_bad_knobs(knobs, needle):
    with pytest.raises(HarnessError) as exc:
        validate_knobs(knobs)
    assert needle in str(exc.value)
