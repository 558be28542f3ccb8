"""Kernel spec parsing and the unpacked layout, without apt or a VM (resolution:
test_catalogue.py)."""

import pytest

from harness import kernels
from harness.errors import HarnessError
from harness.kernels import unpack


def test_parse_specs_all_and_lists():
    assert [s.name for s in kernels.parse_specs("all")] == [
        "5.10",
        "5.10-rt",
        "6.1",
        "6.1-rt",
        "6.12",
        "6.12-rt",
        "sid",
        "sid-rt",
        "rc",
    ]
    assert [s.name for s in kernels.parse_specs("6.12, 6.1")] == ["6.12", "6.1"]


@pytest.mark.parametrize("bad", ["9.9", "6.1,foo", "", " , "])
def test_parse_specs_rejects_unknown_with_the_valid_list(bad):
    with pytest.raises(HarnessError) as e:
        kernels.parse_specs(bad)
    assert "5.10, 5.10-rt, 6.1, 6.1-rt, 6.12, 6.12-rt, sid, sid-rt, rc, 6.12-debug, 6.1-debug, sid-debug, all" in str(
        e.value
    )


def test_split_and_usr_merged_packages_get_one_layout(tmp_path):
    """sid/experimental: vmlinuz, config and modules under /usr/lib/modules/ABI."""
    abi = "7.2.13+deb14-amd64"
    mods = tmp_path / "usr/lib/modules" / abi
    (mods / "kernel").mkdir(parents=True)
    for name in ("vmlinuz", "config", "modules.order"):
        (mods / name).write_text(name)
    unpack.merge_usr_layout(tmp_path, abi)
    files = kernels.KernelFiles(kernels.ROWS["sid"], abi, "7.2.13-1", tmp_path)
    assert files.vmlinuz.read_text() == "vmlinuz"
    assert (tmp_path / "boot" / f"config-{abi}").read_text() == "config"
    assert (files.modules_dir / "modules.order").read_text() == "modules.order"
    assert not (tmp_path / "boot" / f"System.map-{abi}").exists(), "only what the package has"
    unpack.merge_usr_layout(tmp_path, abi)  # twice is harmless


def test_classic_layout_is_left_alone(tmp_path):
    abi = "6.1.0-57-amd64"
    (tmp_path / "lib/modules" / abi).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / f"vmlinuz-{abi}").write_text("k")
    unpack.merge_usr_layout(tmp_path, abi)
    assert not (tmp_path / "lib").is_symlink() and (tmp_path / "boot" / f"vmlinuz-{abi}").read_text() == "k"


def test_fix_headers_makes_the_tree_relocatable(tmp_path):
    files = kernels.KernelFiles(kernels.ROWS["6.1"], "6.1.0-56-amd64", "6.1.192-2", tmp_path)
    files.headers_dir.mkdir(parents=True)
    (files.headers_dir / "Makefile").write_text("include /usr/src/linux-headers-6.1.0-56-common/Makefile\n")
    lib = tmp_path / "usr/lib/linux-kbuild-6.1"
    lib.mkdir(parents=True)
    (files.headers_dir / "scripts").symlink_to("/usr/lib/linux-kbuild-6.1")
    unpack._fix_headers(files)
    text = (files.headers_dir / "Makefile").read_text()
    assert "/usr/src" not in text and "../linux-headers-6.1.0-56-common/Makefile" in text
    assert (files.headers_dir / "scripts").resolve() == lib.resolve()


@pytest.mark.parametrize(
    "config, lockdep, kasan",
    [
        ("CONFIG_PROVE_LOCKING=y\nCONFIG_KASAN=y\n", True, True),
        ("CONFIG_LOCKDEP=y\n# CONFIG_PROVE_LOCKING is not set\nCONFIG_KASAN=y\n", False, True),
        ("CONFIG_PROVE_LOCKING=y\nCONFIG_KASAN_GENERIC=y\n", True, False),
        ("CONFIG_PROVE_LOCKING=m\n", False, False),
    ],
)
def test_lockdep_and_kasan_are_facts_of_the_kernels_config(tmp_path, config, lockdep, kasan):
    files = kernels.KernelFiles(kernels.ROWS["6.1"], "6.1.0-57-amd64", "6.1.192-3", tmp_path)
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "config-6.1.0-57-amd64").write_text(config)
    assert (files.lockdep, files.kasan) == (lockdep, kasan)


def test_a_kernel_without_a_config_has_no_facts_to_tell(tmp_path):
    files = kernels.KernelFiles(kernels.ROWS["6.1"], "6.1.0-57-amd64", "6.1.192-3", tmp_path)
    with pytest.raises(OSError):
        files.lockdep


def test_the_reports_take_the_kernels_facts_and_a_tree_without_a_config_has_none(tmp_path):
    from harness.pytest_plugin import kernel_properties

    files = kernels.KernelFiles(kernels.ROWS["6.1"], "6.1.0-57-amd64", "6.1.192-3", tmp_path)
    assert dict(kernel_properties(files))["kernel_config"]["lockdep"] is False
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot" / "config-6.1.0-57-amd64").write_text("CONFIG_PROVE_LOCKING=y\nCONFIG_KASAN=y\n")
    files = kernels.KernelFiles(kernels.ROWS["6.1"], "6.1.0-57-amd64", "6.1.192-3", tmp_path)
    config = dict(kernel_properties(files))["kernel_config"]
    assert (config["lockdep"], config["kasan"]) == (True, True)
