"""Derived kernels without a build: options and patches read, the identity
(options as they take effect, patches in order), the refusals, and a patch
staged over a base's source the way a derived build does."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from harness import cli
from harness.errors import HarnessError
from harness.kernels import ROWS, debugkernel, derive
from harness.kernels.apt.walk import source_release

BASE = ROWS["6.12-debug"]
UHID = "--- a/drivers/hid/uhid.c\n+++ b/drivers/hid/uhid.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"


def test_options_and_fragments_are_read_in_order_later_ones_winning(tmp_path):
    frag = tmp_path / "my.config"
    frag.write_text('# a comment\nCONFIG_UHID=m\n\n# CONFIG_HID_GENERIC is not set\nCONFIG_FOO="x y"\n')
    got = derive.read_options([str(frag), "CONFIG_UHID=y", "CONFIG_NR=0x10"])
    assert got == ("CONFIG_UHID=y", "CONFIG_HID_GENERIC=n", 'CONFIG_FOO="x y"', "CONFIG_NR=0x10")


def test_the_harness_own_fragments_go_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from any folder
    got = derive.read_options(["debuginfo"])
    assert "CONFIG_DEBUG_INFO_DWARF5=y" in got and "CONFIG_DEBUG_INFO_NONE=n" in got and "CONFIG_FW_CFG_SYSFS=y" in got
    with pytest.raises(HarnessError, match="debug, debuginfo, families, guest"):
        derive.read_options(["nosuch"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("UHID=m", "not an option"),
        ("CONFIG_UHID=maybe", "not an option"),
        ("/nonexistent/frag.config", "no such fragment file"),
    ],
)
def test_bad_options_are_one_line(item, message):
    with pytest.raises(HarnessError, match=message) as err:
        derive.read_options([item])
    assert "\n" not in str(err.value)


def test_a_patch_folder_applies_by_its_series_else_in_name_order(tmp_path):
    for name in ("b.patch", "a.patch", "notes.txt"):
        (tmp_path / name).write_text(UHID)
    assert [p.name for p in derive.read_patches([str(tmp_path)])] == ["a.patch", "b.patch"]
    (tmp_path / "series").write_text("# order\nb.patch\na.patch -p1\n")
    assert [p.name for p in derive.read_patches([str(tmp_path)])] == ["b.patch", "a.patch"]
    (tmp_path / "series").write_text("c.patch\n")
    with pytest.raises(HarnessError, match="series names c.patch"):
        derive.read_patches([str(tmp_path)])
    with pytest.raises(HarnessError, match="no such file or folder"):
        derive.read_patches([str(tmp_path / "nope.patch")])


def test_the_identity_hashes_options_as_they_take_effect_and_patches_in_order(tmp_path):
    a, b = tmp_path / "a.patch", tmp_path / "b.patch"
    a.write_text(UHID)
    b.write_text(UHID.replace("TWO", "2"))
    one = derive.derive(BASE, ("CONFIG_UHID=m", "CONFIG_HID=y"), (a, b))
    assert one.name.startswith("6.12-debug+k") and one.base == "6.12-debug"
    assert derive.derive(BASE, ("CONFIG_HID=y", "CONFIG_UHID=m"), (a, b)).name == one.name  # order of options: same
    assert derive.derive(BASE, ("CONFIG_UHID=m", "CONFIG_HID=y"), (b, a)).name != one.name  # order of patches: not
    assert derive.derive(BASE, ("CONFIG_UHID=y", "CONFIG_HID=y"), (a, b)).name != one.name
    b.write_text(UHID.replace("TWO", "3"))
    assert derive.derive(BASE, ("CONFIG_UHID=m", "CONFIG_HID=y"), (a, b)).name != one.name  # a patch's bytes
    assert derive.derive(BASE) is BASE  # nothing to add: the base itself


def test_a_comment_in_the_fragment_changes_no_release(tmp_path, monkeypatch):
    frag = tmp_path / "debug.config"
    frag.write_text(BASE.fragment_paths[0].read_text())
    row = replace(BASE, fragments=("debug.config",))
    monkeypatch.setattr(type(row), "fragment_paths", property(lambda self: (frag,)))
    before = source_release(row, "6.12.118", "ab" * 32)
    frag.write_text("# a new comment\n\n" + frag.read_text() + "\n   \n")
    assert source_release(row, "6.12.118", "ab" * 32) == before
    frag.write_text(frag.read_text() + "CONFIG_UHID=m\n")
    assert source_release(row, "6.12.118", "ab" * 32) != before
    # A derived kernel keeps its base's uname -r: its identity is in the cache, not the release.
    derived = derive.derive(row, ("CONFIG_UHID=m",))
    assert source_release(derived, "6.12.118", "ab" * 32) == source_release(row, "6.12.118", "ab" * 32)


@pytest.mark.parametrize("spec", ["6.1", "sid-rt"])
def test_options_or_patches_for_a_packaged_kernel_are_refused(spec):
    with pytest.raises(HarnessError, match=f"{spec} is a packaged kernel"):
        derive.derive(ROWS[spec], ("CONFIG_UHID=m",))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fetch", "--kernel", "6.1", "--kconfig", "CONFIG_UHID=m"], "6.1 is a packaged kernel"),
        (["run", "--kernel", "6.12", "--patch", "{patch}", "--", "true"], "6.12 is a packaged kernel"),
        (["build", "--kernel", "6.12-debug", "--kconfig", "UHID", "{dir}"], "no such fragment file"),
        (["race", "--kernel", "6.12-debug", "--patch", "/nonexistent.patch"], "no such file or folder"),
    ],
)
def test_cli_refusals_are_one_line_exit_2_before_anything_is_built(argv, message, tmp_path, capsys):
    patch = tmp_path / "x.patch"
    patch.write_text(UHID)
    (tmp_path / "Kbuild").write_text("obj-m += x.o\n")
    argv = [a.format(patch=patch, dir=tmp_path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def _source(tmp_path: Path) -> tuple[Path, Path]:
    lower = tmp_path / "lower"
    (lower / "drivers/hid").mkdir(parents=True)
    (lower / "drivers/hid/uhid.c").write_text("one\ntwo\nthree\n")
    (lower / "Makefile").write_text("all:\n")
    upper = tmp_path / "upper"
    upper.mkdir()
    return lower, upper


def test_patches_are_staged_over_the_base_source_which_stays_untouched(tmp_path):
    lower, upper = _source(tmp_path)
    first = tmp_path / "1.patch"
    first.write_text(UHID)
    second = tmp_path / "2.patch"  # applies only after the first
    second.write_text(UHID.replace("-two\n+TWO", "-TWO\n+zwei"))
    new = tmp_path / "3.patch"
    new.write_text("--- /dev/null\n+++ b/drivers/hid/new.c\n@@ -0,0 +1 @@\n+fresh\n")
    row = derive.derive(BASE, patches=(first, second, new))
    debugkernel.stage_patches(row, lower, upper)
    assert (upper / "drivers/hid/uhid.c").read_text() == "one\nzwei\nthree\n"
    assert (upper / "drivers/hid/new.c").read_text() == "fresh\n"
    assert (lower / "drivers/hid/uhid.c").read_text() == "one\ntwo\nthree\n"
    assert not (upper / "Makefile").exists()  # only what the patches write is copied up


def test_a_patch_that_does_not_apply_names_the_file_and_hunk_and_stages_nothing(tmp_path):
    lower, upper = _source(tmp_path)
    bad = tmp_path / "bad.patch"
    bad.write_text(UHID.replace(" one\n-two", " eins\n-two"))
    row = derive.derive(BASE, patches=(bad,))
    with pytest.raises(HarnessError) as err:
        debugkernel.stage_patches(row, lower, upper)
    assert str(err.value) == (
        "--patch bad.patch: does not apply to linux-source-6.12: hunk #1 of drivers/hid/uhid.c (at line 1); "
        "nothing built"
    )
    assert list(upper.iterdir()) == []


def test_a_derived_kernel_has_its_own_cache_folder_module_builds_and_listing(tmp_path, monkeypatch):
    from harness.kernels import modbuild
    from harness.kernels.apt import ResolvedKernel
    from harness.kernels.files import files_of, root_of

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    patch = tmp_path / "x.patch"
    patch.write_text(UHID)
    row = derive.derive(BASE, ("CONFIG_UHID=m",), (patch,))
    base_res = ResolvedKernel(BASE, "6.12.118-debug-12345678", "6.12.118-1", ())
    res = ResolvedKernel(row, base_res.abi, base_res.version, ())
    assert root_of(res) != root_of(base_res) and root_of(res).name == f"{base_res.abi}+{derive.ident_of(row)}"
    assert files_of(res).release == base_res.abi  # uname -r: the base's
    assert modbuild.build_identity(files_of(res)) != modbuild.build_identity(files_of(base_res))
    root_of(res).mkdir(parents=True)
    (root_of(res) / "derived.json").write_text(__import__("json").dumps(derive.record(row)))
    assert derive.built() == []  # not whole until its marker is written
    (root_of(res) / ".unpacked.json").write_text("{}")
    (listed,) = derive.built()
    assert (listed["name"], listed["base"], listed["options"], listed["release"]) == (
        row.name,
        "6.12-debug",
        ["CONFIG_UHID=m"],
        base_res.abi,
    )


def test_the_pytest_plugin_derives_from_options_and_ini_lines(tmp_path):
    from types import SimpleNamespace

    from harness.pytest_plugin import _kernel_rows

    patch = tmp_path / "fix.patch"
    patch.write_text(UHID)
    given = {"--kernel": "6.12-debug,6.1", "--kconfig": None, "--patch": None}
    ini = {"kconfig": ["CONFIG_UHID=m"], "patches": ["fix.patch"]}
    config = SimpleNamespace(getoption=given.get, getini=ini.get, inipath=tmp_path / "pytest.ini")
    with pytest.raises(HarnessError, match="6.1 is a packaged kernel"):
        _kernel_rows(config)
    given["--kernel"] = "6.12-debug"
    (row,) = _kernel_rows(config)
    assert row.options == ("CONFIG_UHID=m",) and row.patches == (patch,)
    given["--kconfig"] = ["CONFIG_UHID=y"]  # the command line over the ini line
    assert _kernel_rows(config)[0].options == ("CONFIG_UHID=y",)


def test_what_is_made_from_a_derived_kernel_is_keyed_apart_from_its_base(tmp_path, monkeypatch):
    """Images and payloads start their keys from `identity`: a derived kernel
    has its base's release, and a payload of its uhid.ko once came out of
    the cache with the base's uhid.ko in it."""
    import inspect

    from harness.guest import image
    from harness.kernels import KernelFiles

    row = derive.derive(BASE, ("CONFIG_UHID=m",))
    base = KernelFiles(BASE, "6.12.118-debug-1", "6.12.118-1", tmp_path, "")
    derived = KernelFiles(row, "6.12.118-debug-1", "6.12.118-1", tmp_path, "")
    assert base.identity == base.release and derived.identity == f"{base.release}+{derive.ident_of(row)}"
    for fn in (image.base_image, image.build_image):
        assert "kernel.identity" in inspect.getsource(fn), fn.__name__


def test_a_project_names_its_kernels_in_its_pyproject(tmp_path, monkeypatch, capsys):
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "1-uhid.patch").write_text(UHID)
    (tmp_path / "extra.config").write_text("CONFIG_HID=m\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "mydrv"\n\n'
        '[tool.harness.kernels.uhid-debug]\nbase = "6.12-debug"\n'
        'kconfig = ["extra.config", "CONFIG_UHID=m"]\npatches = ["patches"]\n'
    )
    rows = derive.parse_kernels("6.1,uhid-debug", tmp_path)
    assert [r.name for r in rows] == ["6.1", "uhid-debug"]
    named = rows[1]
    assert named.base == "6.12-debug" and named.options == ("CONFIG_HID=m", "CONFIG_UHID=m")
    assert named.patches == (tmp_path / "patches" / "1-uhid.patch",)
    assert derive.parse_kernels("6.1", tmp_path) == [ROWS["6.1"]]
    with pytest.raises(HarnessError, match="or one this project names: uhid-debug$"):
        derive.parse_kernels("uhid-debg", tmp_path)
    # From the project's folder, every command takes the name like a spec.
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fetch", "--kernel", "uhid-debug", "--kconfig", "CONFIG_X=y"]) == 2
    assert "uhid-debug is a derived kernel" in capsys.readouterr().err


@pytest.mark.parametrize(
    "table, message",
    [
        ('[tool.harness.kernels.x]\nbase = "6.1"\nkconfig = ["CONFIG_UHID=m"]\n', "6.1 is a packaged kernel"),
        ('[tool.harness.kernels.x]\nbase = "7.7"\n', "base '7.7' is no kernel of the table"),
        ('[tool.harness.kernels.x]\nbase = "6.12-debug"\nopts = []\n', "wants base = SPEC"),
        ('[tool.harness.kernels."6.1"]\nbase = "6.12-debug"\n', "a spec of the kernel table"),
        ("[tool.harness.kernels.x\n", "cannot read"),
    ],
)
def test_a_bad_kernel_definition_is_one_line(table, message, tmp_path):
    (tmp_path / "pyproject.toml").write_text(table)
    with pytest.raises(HarnessError, match=message) as err:
        derive.parse_kernels("x", tmp_path)
    assert "\n" not in str(err.value)


def test_an_option_olddefconfig_drops_is_one_line_and_no_config_is_kept(tmp_path, monkeypatch):
    from harness.kernels import buildroot

    tree = debugkernel.Tree(tmp_path / "root", "6.12.118-debug-1", "linux-source-6.12-x")
    tree.obj.mkdir(parents=True)
    (tree.obj / ".config").write_text("CONFIG_KASAN=y\n# CONFIG_HID is not set\n")
    upper = tmp_path / "upper"
    upper.mkdir()
    layers = (
        buildroot.Overlay(tree.src_in_root, tmp_path / "s", tmp_path / "w"),
        buildroot.Overlay(tree.obj_in_root, upper, tmp_path / "w2"),
    )

    def olddefconfig(tree_, argv, what, fix="", layers=()):  # UHID depends on HID, which is off
        assert argv[-1] == "olddefconfig" and layers
        config = upper / ".config"
        config.write_text("".join(ln + "\n" for ln in config.read_text().splitlines() if "UHID" not in ln))

    monkeypatch.setattr(debugkernel, "_in_root", olddefconfig)
    row = derive.derive(BASE, ("CONFIG_UHID=m",))
    with pytest.raises(HarnessError) as err:
        debugkernel._configure_derived(row, tree, layers)
    assert str(err.value) == (
        f"kernel {row.name}: olddefconfig dropped 1 option(s) of --kconfig: CONFIG_UHID=m (got n) "
        "(a dependency is missing or the option was renamed); nothing built"
    )
    assert not (upper / ".config").exists()  # the next try configures again


def test_patched_sources_are_made_newer_than_a_base_built_after_them(tmp_path):
    """On a cold cache the patches are staged first (to fail early), then the
    base compiles: its objects are newer than the patched sources, and make,
    which rebuilds by time, would keep the base's.  Freshened before the
    derived build, they are rebuilt."""
    import os
    import time

    lower, upper = _source(tmp_path)
    patch = tmp_path / "1.patch"
    patch.write_text(UHID)
    debugkernel.stage_patches(derive.derive(BASE, patches=(patch,)), lower, upper)
    source = upper / "drivers/hid/uhid.c"
    obj = tmp_path / "uhid.o"  # the base's object, compiled after the staging
    obj.write_text("")
    os.utime(source, (time.time() - 3600, time.time() - 3600))
    assert source.stat().st_mtime < obj.stat().st_mtime
    debugkernel.freshen_patched(upper)
    assert source.stat().st_mtime >= obj.stat().st_mtime
