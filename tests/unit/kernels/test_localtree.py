"""Local kernels (`--kernel PATH`): discovery, the guest config check, the
module tree from modules.order, the layout in the cache, versions, the
compiler, and out-of-tree builds on the host.  No guest boots here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import kernels
from harness.errors import HarnessError
from harness.kernels import localtree, modbuild, table
from treedata import CC_TEXT, RELEASE, build_tree, elf_kernel, guest_config, installed_root, note


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


# ---------------------------------------------------------------- discovery


def test_a_build_tree_with_a_pvh_vmlinux_boots_the_elf(tmp_path):
    tree = localtree.discover(str(build_tree(tmp_path / "linux")))
    assert (tree.kind, tree.release, tree.path) == (localtree.BUILD_TREE, RELEASE, tmp_path / "linux")
    assert tree.boot_image == tree.vmlinux == tmp_path / "linux" / "vmlinux"
    assert tree.kbuild_dir == tmp_path / "linux" and tree.cc_version_text == CC_TEXT
    assert [dest for dest, _ in tree.modules] == ["kernel/fs/minix/minix.ko", "kernel/drivers/net/dummy.ko"]


def test_without_the_pvh_note_the_bzimage_boots(tmp_path):
    tree = localtree.discover(str(build_tree(tmp_path / "linux", pvh=False)))
    assert tree.vmlinux is None and tree.boot_image == tmp_path / "linux" / "arch/x86/boot/bzImage"
    row = table.local_row(str(tmp_path / "linux"))
    assert not row.boot_elf and row.local == tree


def test_kasan_in_the_config_boots_the_bzimage_slower_with_the_debug_rows_settings(tmp_path):
    build_tree(tmp_path / "linux", config=guest_config(CONFIG_KASAN="y"))
    row = table.local_row(str(tmp_path / "linux"))
    assert not row.boot_elf and row.time_factor == 4.0 and "kasan_multi_shot" in row.cmdline


def test_an_installed_root_is_found_by_its_boot_and_modules_folders(tmp_path):
    tree = localtree.discover(str(installed_root(tmp_path / "root")))
    assert (tree.kind, tree.release) == (localtree.INSTALLED_ROOT, RELEASE)
    assert tree.boot_image == tmp_path / "root" / "boot" / f"vmlinuz-{RELEASE}"
    assert tree.kbuild_dir is None  # no lib/modules/RELEASE/build link
    assert sorted(dest for dest, _ in tree.modules) == ["kernel/drivers/net/dummy.ko", "kernel/fs/minix/minix.ko"]


def test_an_installed_roots_build_link_is_where_modules_build(tmp_path):
    linux = build_tree(tmp_path / "linux")
    root = installed_root(tmp_path / "root")
    (root / "lib" / "modules" / RELEASE / "build").symlink_to(linux)
    (linux / "Makefile").write_text("all:\n")
    assert localtree.discover(str(root)).kbuild_dir == linux


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.mkdir(), "is neither a kernel build tree (no .config) nor an installed root"),
        (lambda d: build_tree(d, pvh=False, bzimage=False), "has no built image"),
        (lambda d: build_tree(d, built=False), "is configured but not built"),
        (lambda d: (d / "modules.order").unlink() if build_tree(d) else None, "has no modules.order"),
        (
            lambda d: (d / "fs/minix/minix.ko").unlink() if build_tree(d) else None,
            "modules.order names fs/minix/minix.o but there is no fs/minix/minix.ko",
        ),
        (
            lambda d: (d / "lib").mkdir(parents=True) or (d / "lib/modules/1.0").mkdir(parents=True),
            "has modules (1.0) but no boot/vmlinuz-*",
        ),
        (lambda d: d.write_text("x"), "not a folder"),
        (
            lambda d: (
                installed_root(d),
                (d / "boot" / "vmlinuz-7.0").write_bytes(b"MZ"),
                (d / "lib/modules/7.0").mkdir(),
            ),
            "holds several kernels (6.12.118-local, 7.0)",
        ),
        (lambda d: (installed_root(d), (d / "boot" / f"config-{RELEASE}").unlink()), f"has no boot/config-{RELEASE}"),
        (lambda d: (installed_root(d), shutil.rmtree(d / "lib")), f"has no lib/modules/{RELEASE}"),
    ],
)
def test_what_is_not_a_usable_kernel_is_one_line_naming_it(tmp_path, make, message):
    make(tmp_path / "k")
    with pytest.raises(HarnessError) as err:
        localtree.discover(str(tmp_path / "k"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_folder_is_named_as_given():
    with pytest.raises(HarnessError, match=r"^kernel \./no/such: no such folder$"):
        localtree.discover("./no/such")


def test_spec_lists_mix_names_and_paths(tmp_path, monkeypatch):
    build_tree(tmp_path / "linux")
    monkeypatch.chdir(tmp_path)
    specs = kernels.parse_specs("6.1, ./linux")
    assert specs[0] is kernels.ROWS["6.1"]
    assert specs[1].name == str(tmp_path / "linux") and specs[1].local is not None
    assert kernels.get_spec("linux").name == str(tmp_path / "linux")  # an existing folder, no slash
    with pytest.raises(HarnessError, match="unknown kernel spec 'nope'.*or the PATH of a kernel build tree"):
        kernels.parse_specs("6.1,nope")


# ---------------------------------------------------------------- the guest config check


def test_the_fragments_recommended_options_are_not_checked():
    needs = localtree.guest_needs(localtree.GUEST_FRAGMENT.read_text())
    assert "CONFIG_VIRTIO_NET" in needs and "CONFIG_KPROBES" in needs and needs["CONFIG_MODULE_SIG_FORCE"] == "n"
    assert "CONFIG_PVH" not in needs and "CONFIG_MINIX_FS" not in needs
    assert localtree.RECOMMENDED_MARK in localtree.GUEST_FRAGMENT.read_text()


def test_each_missing_option_is_named_on_one_line(tmp_path):
    config = guest_config(CONFIG_VIRTIO_NET=None, CONFIG_KPROBES="n", CONFIG_MODULE_SIG_FORCE="y")
    build_tree(tmp_path / "linux", config=config)
    with pytest.raises(HarnessError) as err:
        localtree.discover(str(tmp_path / "linux"))
    text = str(err.value)
    assert "\n" not in text
    assert (
        "its .config lacks what the guest needs: CONFIG_VIRTIO_NET, CONFIG_MODULE_SIG_FORCE=y "
        "(must not be set), CONFIG_KPROBES (merge "
    ) in text
    assert str(localtree.GUEST_FRAGMENT) in text and "merge_config.sh" in text


def test_a_module_meets_a_y_and_a_string_must_match():
    needs = {"CONFIG_VIRTIO_NET": "y", "CONFIG_HZ": "250", "CONFIG_X": "n"}
    assert localtree.unmet_needs({"CONFIG_VIRTIO_NET": "m", "CONFIG_HZ": "250"}, needs) == []
    assert localtree.unmet_needs({"CONFIG_HZ": "100", "CONFIG_X": "m"}, needs) == [
        "CONFIG_VIRTIO_NET",
        "CONFIG_HZ=250 (have 100)",
        "CONFIG_X=m (must not be set)",
    ]


# ---------------------------------------------------------------- modules.order and the layout


@pytest.mark.parametrize("form", [".ko", ".o"])
def test_modules_order_in_either_form_gives_the_module_tree(tmp_path, form):
    tree = build_tree(tmp_path / "linux", order_form=form)
    assert localtree.modules_from_order(tree, (tree / "modules.order").read_text()) == (
        ("kernel/fs/minix/minix.ko", tree / "fs/minix/minix.ko"),
        ("kernel/drivers/net/dummy.ko", tree / "drivers/net/dummy.ko"),
    )


def test_a_compressed_module_is_found_under_its_own_name(tmp_path):
    tree = build_tree(tmp_path / "linux")
    (tree / "fs/minix/minix.ko").rename(tree / "fs/minix/minix.ko.xz")
    assert localtree.modules_from_order(tree, "fs/minix/minix.o\n") == (
        ("kernel/fs/minix/minix.ko.xz", tree / "fs/minix/minix.ko.xz"),
    )


def test_fetch_lays_the_tree_out_like_an_unpacked_kernel_and_writes_nothing_into_it(tmp_path, cache):
    tree = build_tree(tmp_path / "linux")
    before = _files(tree)
    kfiles = kernels.fetch(kernels.get_spec(str(tree)))
    assert (kfiles.release, kfiles.describe, kfiles.label) == (RELEASE, "build tree", "linux")
    assert kfiles.version.startswith("local-") and kfiles.root == cache / "kernels" / kfiles.version / "root"
    assert kfiles.boot_image.resolve() == tree / "vmlinux"
    assert kfiles.config["CONFIG_VIRTIO_NET"] == "y"
    mods = kfiles.modules_dir
    assert (mods / "kernel/fs/minix/minix.ko").resolve() == tree / "fs/minix/minix.ko"
    assert (mods / "modules.order").read_text() == "kernel/fs/minix/minix.ko\nkernel/drivers/net/dummy.ko\n"
    assert "kernel/fs/minix/minix.ko:" in (mods / "modules.dep").read_text()  # depmod ran
    assert (mods / "modules.builtin").read_text() == "kernel/fs/ext4/ext4.ko\n"
    assert kfiles.headers_dir.resolve() == tree
    assert kernels.damage_of_kernel(kfiles) is None
    assert _files(tree) == before
    assert kernels.fetch(kernels.get_spec(str(tree))) == kfiles  # reused


def test_a_rebuilt_tree_is_a_new_version_and_its_old_layout_is_damaged(tmp_path, cache):
    tree = build_tree(tmp_path / "linux")
    first = kernels.fetch(kernels.get_spec(str(tree)), quiet=True)
    (tree / "vmlinux").write_bytes(elf_kernel(note(b"Xen", localtree.XEN_ELFNOTE_PHYS32_ENTRY, b"\1\0\0\0")))
    assert "vmlinux" in (kernels.damage_of_kernel(first) or "")
    second = kernels.fetch(kernels.get_spec(str(tree)), quiet=True)
    assert second.version != first.version


def test_the_version_is_the_content_not_the_times(tmp_path, cache):
    tree = build_tree(tmp_path / "linux")
    memo = tmp_path / "memo"
    first = localtree.content_version(localtree.discover(str(tree)), memo)
    os.utime(tree / "vmlinux", ns=(1, 1))
    assert localtree.content_version(localtree.discover(str(tree)), memo) == first
    (tree / "drivers/net/dummy.ko").write_bytes(b"changed")
    assert localtree.content_version(localtree.discover(str(tree)), memo) != first


def test_an_installed_root_lays_out_too(tmp_path, cache):
    root = installed_root(tmp_path / "root")
    kfiles = kernels.fetch(kernels.get_spec(str(root)), quiet=True)
    assert kfiles.boot_image.resolve() == root / "boot" / f"vmlinuz-{RELEASE}"
    assert (kfiles.modules_dir / "kernel/fs/minix/minix.ko").is_file()
    assert kfiles.describe == "installed root" and kernels.damage_of_kernel(kfiles) is None


def test_a_git_tree_is_described_without_touching_its_index(tmp_path):
    if not shutil.which("git"):
        pytest.skip("no git")
    tree = build_tree(tmp_path / "linux")
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", ".config"], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    subprocess.run([*git, "tag", "v6.12"], check=True)
    assert localtree.describe(localtree.discover(str(tree))) == "build tree, git v6.12"
    (tree / ".config").write_text(guest_config(CONFIG_HZ="100"))
    index = (tree / ".git" / "index").stat().st_mtime_ns
    assert localtree.describe(localtree.discover(str(tree))) == "build tree, git v6.12-dirty"
    assert (tree / ".git" / "index").stat().st_mtime_ns == index


# ---------------------------------------------------------------- PVH note


def test_the_pvh_note_is_found_only_as_xens_phys32_entry(tmp_path):
    f = tmp_path / "k"
    for data, want in (
        (elf_kernel(), True),
        (elf_kernel(note(b"Linux", 18)), False),
        (elf_kernel(note(b"Xen", 17) + note(b"Xen", 18)), True),
        (b"MZ not elf", False),
    ):
        f.write_bytes(data)
        assert localtree.has_pvh_note(f) is want


# ---------------------------------------------------------------- the compiler


def _host(versions: dict[str, str]):
    return (lambda name: f"/usr/bin/{name}" if name in versions else None, lambda path: versions[Path(path).name])


def test_the_compiler_the_config_names_is_found_on_the_host():
    which, version = _host(
        {"gcc": "gcc (Debian 14.2.0-19) 14.2.0", "gcc-12": "gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0"}
    )
    cc = localtree.find_compiler(CC_TEXT, "tree", which, version)
    assert cc.path == "/usr/bin/gcc-12"  # gcc is 14 here; gcc-12 is the same compiler
    which, version = _host({"gcc-12": "gcc-12 (Debian 12.2.0-14+deb12u2) 12.2.0"})
    assert localtree.find_compiler(CC_TEXT, "tree", which, version).path == "/usr/bin/gcc-12"  # same version
    assert (
        localtree.find_compiler(
            "gcc-10 (Debian 10.2.1-6) 10.2.1 20210110",
            "tree",
            *_host({"gcc-10": "gcc-10 (Debian 10.2.1-6) 10.2.1 20210110"}),
        ).path
        == "/usr/bin/gcc-10"
    )


def test_a_compiler_missing_from_the_host_is_one_line_naming_what_to_install():
    with pytest.raises(
        HarnessError,
        match=r"^tree was built with gcc \(Debian 12.2.0-14\+deb12u1\) 12.2.0 and "
        r"this host has no gcc 12.2.0 \(gcc 14.2.0\); install gcc-12$",
    ):
        localtree.find_compiler(CC_TEXT, "tree", *_host({"gcc": "gcc (Debian 14.2.0-19) 14.2.0"}))
    with pytest.raises(HarnessError, match="for gcc-built trees only"):
        localtree.find_compiler("Debian clang version 16.0.6 (15)", "tree", *_host({}))


def test_out_of_tree_modules_build_on_the_host_with_the_trees_compiler(tmp_path, cache):
    gcc = shutil.which("gcc")
    line = localtree.version_line(gcc) if gcc else ""
    if not line:
        pytest.skip("no gcc on this host")
    tree = build_tree(tmp_path / "linux", config=guest_config(CONFIG_CC_VERSION_TEXT=f'"{line}"'))
    (tree / "Makefile").write_text('modules:\n\tcd $(M) && for f in *.c; do echo "$(CC)" > $${f%.c}.ko; done\n')
    src = tmp_path / "mod"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := hello.o\n")
    (src / "hello.c").write_text("int x;\n")
    before = _files(tree)
    kfiles = kernels.fetch(kernels.get_spec(str(tree)), quiet=True)
    identity = modbuild.build_identity(kfiles)
    assert identity.startswith("host-gcc") and identity.endswith(kfiles.version)
    built = modbuild.build_dir(kfiles, src)
    assert built.ko("hello").read_text().strip() == gcc
    assert _files(tree) == before and sorted(p.name for p in src.iterdir()) == ["Kbuild", "hello.c"]
