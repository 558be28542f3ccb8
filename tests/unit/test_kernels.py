"""Kernel spec parsing and ABI resolution, without apt or a VM."""

import pytest

from harness import kernels
from harness.errors import HarnessError

HEADERS_META = """Package: linux-headers-amd64
Version: 6.1.192-2
Depends: linux-headers-6.1.0-56-amd64 (= 6.1.192-2)
"""
IMAGE_META = """Package: linux-image-amd64
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
"""
HEADERS = """Package: linux-headers-6.1.0-56-amd64
Version: 6.1.192-2
Depends: linux-headers-6.1.0-56-common (= 6.1.192-2), linux-kbuild-6.1 (>= 6.1.192-2),
 linux-compiler-gcc-12-x86
"""


def test_parse_specs_all_and_lists():
    assert [s.name for s in kernels.parse_specs("all")] == ["6.1", "6.1-rt", "6.12", "6.12-rt"]
    assert [s.name for s in kernels.parse_specs("6.12, 6.1")] == ["6.12", "6.1"]


@pytest.mark.parametrize("bad", ["9.9", "6.1,foo", "", " , "])
def test_parse_specs_rejects_unknown_with_the_valid_list(bad):
    with pytest.raises(HarnessError) as e:
        kernels.parse_specs(bad)
    assert "6.1, 6.1-rt, 6.12, 6.12-rt" in str(e.value)


def test_control_parsing_folds_continuation_lines():
    fields = kernels.parse_control(HEADERS)
    assert fields["Depends"].endswith("linux-compiler-gcc-12-x86")
    assert kernels.depends_on(fields, r"linux-kbuild-.*") == ("linux-kbuild-6.1", None)
    assert kernels.depends_on(fields, r"linux-headers-.*-common(-rt)?") == (
        "linux-headers-6.1.0-56-common", "6.1.192-2")


def _fake_apt(monkeypatch, table):
    monkeypatch.setattr(kernels, "_apt_show", lambda pkg: kernels.parse_control(table[pkg.split("=")[0]]))


def test_resolve_pins_image_and_headers_to_one_abi(monkeypatch):
    _fake_apt(monkeypatch, {"linux-image-amd64": IMAGE_META, "linux-headers-amd64": HEADERS_META,
                            "linux-headers-6.1.0-56-amd64": HEADERS})
    res = kernels._resolve(kernels.SPECS["6.1"])
    assert res.abi == "6.1.0-56-amd64"
    assert res.packages == ("linux-image-6.1.0-56-amd64=6.1.192-2", "linux-headers-6.1.0-56-amd64=6.1.192-2",
                            "linux-headers-6.1.0-56-common=6.1.192-2", "linux-kbuild-6.1")


def test_resolve_refuses_a_mismatched_pair(monkeypatch):
    newer = HEADERS_META.replace("56", "57").replace("192-2", "193-1")
    _fake_apt(monkeypatch, {"linux-image-amd64": IMAGE_META, "linux-headers-amd64": newer})
    with pytest.raises(HarnessError, match="refusing a mismatched pair"):
        kernels._resolve(kernels.SPECS["6.1"])


def test_resolve_refuses_a_meta_package_of_another_series(monkeypatch):
    img = IMAGE_META.replace("6.1.0-56", "6.12.9+deb13")
    hdr = HEADERS_META.replace("6.1.0-56", "6.12.9+deb13")
    hdrs = HEADERS.replace("6.1.0-56", "6.12.9+deb13")
    _fake_apt(monkeypatch, {"linux-image-6.12-amd64": img, "linux-headers-6.12-amd64": hdr,
                            "linux-headers-6.12.9+deb13-amd64": hdrs})
    res = kernels._resolve(kernels.SPECS["6.12"])
    assert res.abi == "6.12.9+deb13-amd64"
    _fake_apt(monkeypatch, {"linux-image-amd64": img, "linux-headers-amd64": hdr})
    with pytest.raises(HarnessError, match="not 6.1"):
        kernels._resolve(kernels.SPECS["6.1"])


def test_fix_headers_makes_the_tree_relocatable(tmp_path):
    files = kernels.KernelFiles("6.1", "6.1.0-56-amd64", "6.1.192-2", tmp_path)
    files.headers_dir.mkdir(parents=True)
    (files.headers_dir / "Makefile").write_text("include /usr/src/linux-headers-6.1.0-56-common/Makefile\n")
    lib = tmp_path / "usr/lib/linux-kbuild-6.1"
    lib.mkdir(parents=True)
    (files.headers_dir / "scripts").symlink_to("/usr/lib/linux-kbuild-6.1")
    kernels._fix_headers(files)
    text = (files.headers_dir / "Makefile").read_text()
    assert "/usr/src" not in text and "../linux-headers-6.1.0-56-common/Makefile" in text
    assert (files.headers_dir / "scripts").resolve() == lib.resolve()
