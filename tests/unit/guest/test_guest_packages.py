"""Guest packages without a VM: names, apt's answer, the memo, the layer and
the image with a layer (its own initramfs, so its own snapshot key)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import util
from harness.errors import HarnessError
from harness.guest import image, packages
from harness.guest import qemu as qemu_mod
from harness.guest import vm as vm_mod
from harness.guest.vm import Vm, VmConfig
from harness.kernels import ROWS, KernelFiles

# What `apt-get install --simulate` prints (trimmed), an upgrade and an arch-qualified line added.
SIMULATION = """\
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  bash libc6 python3-minimal
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64]) []
Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
Inst bash (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
Inst zlib1g:amd64 (1:1.2.13.dfsg-1+deb12u1 Debian-Security:12/oldstable-security [amd64])
Inst python3-minimal [3.11.2-1] (3.11.2-1+b1 Debian:12.15/oldstable [amd64])
Conf bash (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
"""


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """{name: (mode, data)} of a newc archive; a later entry replaces an earlier one, as in the kernel."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos : pos + 6] == b"070701", pos
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos : pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


# ---------------------------------------------------------------- names and apt's answer


def test_names_from_options_and_ini_lines_are_sorted_once():
    assert packages.parse_names(["strace,bash", "python3-minimal bash"]) == ("bash", "python3-minimal", "strace")
    assert packages.parse_names("bash, libc6") == ("bash", "libc6")
    assert packages.parse_names([]) == ()


@pytest.mark.parametrize(
    "bad, why",
    [
        ("bash,", "empty element"),
        (",", "empty element"),
        ("bash,,strace", "empty element"),
        ("-s", "not a Debian package name"),
        ("Bash", "not a Debian package name"),
        ("bash;reboot", "not a Debian package name"),
        ("x", "not a Debian package name"),
        ("bash=5.2", "not a Debian package name"),
    ],
)
def test_bad_names_are_refused(bad, why):
    with pytest.raises(HarnessError, match=why):
        packages.parse_names([bad])


def test_the_simulation_gives_every_installed_package_with_its_version():
    assert packages.parse_simulation(SIMULATION) == [
        ("bash", "5.2.15-2+b13"),
        ("libc6", "2.36-9+deb12u14"),
        ("python3-minimal", "3.11.2-1+b1"),
        ("zlib1g", "1:1.2.13.dfsg-1+deb12u1"),
    ]


def test_preferences_admit_the_guests_release_only():
    text = packages.preferences("bookworm")
    assert [ln for ln in text.splitlines() if ln.startswith("Pin:")] == [
        "Pin: release n=bookworm",
        "Pin: release n=bookworm-updates",
        "Pin: release n=bookworm-security",
        "Pin: release *",
    ]
    assert text.rstrip().endswith("Pin-Priority: -1")


def _pset(*pins: str) -> packages.PackageSet:
    return packages.PackageSet(
        ("bash",), tuple(packages.GuestPackage(p.split("=")[0], p.split("=")[1], "amd64", 10, "ab") for p in pins)
    )


def test_the_layer_key_is_the_exact_set_and_the_rules():
    one = _pset("bash=5.2.15-2", "libc6=2.36-9")
    assert one.key(("init",)) == _pset("bash=5.2.15-2", "libc6=2.36-9").key(("init",))
    assert one.key(("init",)) != _pset("bash=5.2.15-2", "libc6=2.36-9+deb12u1").key(("init",)), "a new version"
    assert one.key(("init",)) != _pset("bash=5.2.15-2").key(("init",)), "a package fewer"
    assert one.key(("init",)) != one.key(("init", "etc/passwd")), "other paths kept out"
    assert packages.PackageSet.from_json(one.asked, json.loads(json.dumps(one.to_json()))) == one
    assert one.packages[1].deb_name == "libc6_2.36-9_amd64.deb"
    assert packages.GuestPackage("zlib1g", "1:1.2.13", "amd64", 1, "").deb_name == "zlib1g_1%3a1.2.13_amd64.deb"


class FakeCatalogue:
    """The catalogue's apt: prints `out` and exits `rc`; counts the runs."""

    def __init__(self, root: Path, out: str = SIMULATION, rc: int = 0, err: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.lists = root / "lists"
        self.generation("lists.1")
        self.out, self.rc, self.err = out, rc, err
        self.runs: list[tuple[str, ...]] = []

    def generation(self, name: str) -> None:
        (self.lists.parent / name).mkdir(exist_ok=True)
        self.lists.unlink(missing_ok=True)
        self.lists.symlink_to(name)

    def argv(self, tool: str, *args: str) -> list[str]:
        self.runs.append((tool, *args))
        code = f"import sys; sys.stdout.write({self.out!r}); sys.stderr.write({self.err!r}); sys.exit({self.rc})"
        return [sys.executable, "-c", code]

    def stanzas(self, pins):
        return {
            (n, v): {"Package": n, "Version": v, "Architecture": "amd64", "Size": "100", "SHA256": "ab"}
            for n, v in pins
        }


@pytest.fixture
def said(monkeypatch):
    lines: list[str] = []
    for mod in (packages, image, util):
        monkeypatch.setattr(mod, "progress", lines.append)
    return lines


def test_apt_resolves_once_per_lists_generation(cache, said, monkeypatch, tmp_path):
    cat = FakeCatalogue(tmp_path / "apt")
    monkeypatch.setattr(packages.apt, "update", lambda: cat)
    got = packages.resolve(["python3-minimal,bash"])
    assert got.asked == ("bash", "python3-minimal") and got.pins[:2] == ("bash=5.2.15-2+b13", "libc6=2.36-9+deb12u14")
    (run,) = cat.runs
    assert run[:3] == ("apt-get", "install", "--simulate") and "--no-install-recommends" in run
    assert run[-2:] == ("bash", "python3-minimal")
    prefs = next(a.split("=", 1)[1] for a in run if a.startswith("Dir::Etc::Preferences="))
    assert Path(prefs).read_text() == packages.preferences(packages.RELEASE)
    assert any("bash python3-minimal with their dependencies: 4 packages" in s for s in said), said
    assert packages.resolve("bash python3-minimal") == got and len(cat.runs) == 1, "remembered"
    cat.generation("lists.2")
    assert packages.resolve("bash,python3-minimal") == got and len(cat.runs) == 2, "new lists: asked again"
    assert packages.resolve(()) == packages.PackageSet((), ()) and len(cat.runs) == 2


def test_an_unknown_package_is_one_line_naming_it(cache, said, monkeypatch, tmp_path):
    cat = FakeCatalogue(
        tmp_path / "apt", out="Reading package lists...\n", rc=100, err="E: Unable to locate package no-such-thing\n"
    )
    monkeypatch.setattr(packages.apt, "update", lambda: cat)
    with pytest.raises(HarnessError) as err:
        packages.resolve(["bash,no-such-thing"])
    assert "\n" not in str(err.value)
    assert "Unable to locate package no-such-thing" in str(err.value) and "bookworm" in str(err.value)
    assert not (cache / "guest-packages" / "resolved.json").exists(), "a refusal is not remembered"


# ---------------------------------------------------------------- the layer


def _tree(root: Path) -> None:
    def put(rel: str, data: bytes = b"x", mode: int = 0o644) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        (root / rel).chmod(mode)

    put("bin/bash", b"\x7fELF bash", 0o755)
    put("bin/tar", b"\x7fELF tar", 0o755)
    put("usr/bin/python3.11", b"\x7fELF python", 0o755)
    (root / "usr/bin/python3").symlink_to("python3.11")
    put("usr/bin/env", b"\x7fELF env", 0o755)
    put("usr/bin/passwd", b"\x7fELF passwd", 0o4755)
    put("sbin/start-stop-daemon", b"\x7fELF ssd", 0o755)
    put("usr/lib/python3.11/os.py", b"import abc\n")
    put("lib/x86_64-linux-gnu/libc.so.6", b"\x7fELF libc", 0o755)
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    put("usr/share/doc/bash/copyright", b"GPL")
    put("usr/share/man/man1/bash.1.gz", b"man")
    put("usr/share/locale/de/LC_MESSAGES/bash.mo", b"mo")
    put("etc/passwd", b"root:x:0:0::/root:/bin/bash\n")  # the harness's own, never replaced
    put("bin/busybox", b"\x7fELF static busybox", 0o755)
    put("usr/sbin/modprobe", b"\x7fELF other modprobe", 0o755)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)


def test_the_layer_holds_the_packages_in_a_merged_usr_view(tmp_path):
    _tree(tmp_path)
    entries = read_newc(packages.layer_archive(tmp_path, ("etc/passwd", "bin/busybox", "sbin/modprobe")))
    files = {n: body for n, (mode, body) in entries.items() if stat.S_ISREG(mode)}
    links = {n: body.decode() for n, (mode, body) in entries.items() if stat.S_ISLNK(mode)}
    assert files["bin/bash"] == b"\x7fELF bash" and files["usr/lib/python3.11/os.py"] == b"import abc\n"
    assert stat.S_IMODE(entries["usr/bin/passwd"][0]) == 0o4755 and stat.S_IMODE(entries["tmp"][0]) == 0o1777
    assert links["usr/bin/python3"] == "python3.11"
    assert links["lib64/ld-linux-x86-64.so.2"] == "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    # Each program in the other half too; a real one replaces busybox's applet there.
    assert links["usr/bin/bash"] == "/bin/bash" and links["usr/bin/tar"] == "/bin/tar"
    assert links["bin/python3"] == "/usr/bin/python3" and links["bin/env"] == "/usr/bin/env"
    assert links["usr/sbin/start-stop-daemon"] == "/sbin/start-stop-daemon"
    assert not any(n.startswith(("usr/share/doc", "usr/share/man", "usr/share/locale")) for n in entries), "junk"
    for kept in ("etc/passwd", "bin/busybox", "usr/bin/busybox", "sbin/modprobe"):
        assert kept not in entries, f"{kept} is the harness's"
    assert "usr/sbin/modprobe" in files, "the package's own path stays; only the alias onto kmod's is left out"
    names = list(entries)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/bash"), "parents first"


def test_the_layer_follows_the_kernels_rules_for_appended_archives(tmp_path):
    """The base and the layer back to back: the later entry wins, the
    harness's own stay (what the kernel's initramfs unpacker does)."""
    base = image.Cpio()
    base.symlink("bin/tar", "busybox")
    base.symlink("usr/bin/tar", "/bin/tar")
    base.symlink("bin/env", "busybox")
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    base.file("bin/busybox", b"\x7fELF dynamic busybox", 0o755)
    _tree(tmp_path)
    first = base.finish()
    assert len(first) % 4 == 0, "the layer starts aligned"
    # The two archives in sequence, as the kernel reads them.
    merged = {**read_newc(first), **read_newc(packages.layer_archive(tmp_path, image.HARNESS_OWNED))}
    assert merged["bin/tar"][1] == b"\x7fELF tar" and merged["bin/env"][1] == b"/usr/bin/env"
    assert merged["etc/passwd"][1].endswith(b"/bin/sh\n") and merged["bin/busybox"][1] == b"\x7fELF dynamic busybox"


# ---------------------------------------------------------------- the image with a layer


@pytest.fixture
def base_image(cache, tmp_path):
    out = util.private_dir(util.private_dir(cache / "images") / "base-0123")
    initrd = out / "initramfs.cpio"
    initrd.write_bytes(b"BASE" * 100)
    kernel = KernelFiles(ROWS["6.1"], "6.1.0-1-amd64", "1", tmp_path / "kernel")
    return image.Image(kernel, initrd, tmp_path / "key", "ecdsa AAAA", initrd_stamp=util.Stamp.of(initrd))


@pytest.fixture
def fake_layers(monkeypatch, tmp_path):
    made: list[str] = []
    sets = {"bash": _pset("bash=5.2.15-2", "libc6=2.36-9")}

    def layer(pset, keep_out):
        made.append(pset.pins[-1])
        path = tmp_path / f"layer-{len(made)}.cpio"
        path.write_bytes(b"LAYER" + " ".join(pset.pins).encode())
        return packages.Layer(path, util.Stamp.of(path), pset.key(keep_out), pset)

    monkeypatch.setattr(packages, "resolve", lambda names: sets[" ".join(names)] if names else _pset())
    monkeypatch.setattr(packages, "layer", layer)
    return SimpleNamespace(made=made, sets=sets)


def test_an_image_with_packages_is_the_base_then_the_layer_in_a_file_of_its_own(base_image, fake_layers):
    img = image.with_packages(base_image, ("bash",))
    assert img.initrd != base_image.initrd and img.initrd.parent.parent == base_image.initrd.parent
    assert img.initrd.read_bytes() == b"BASE" * 100 + b"LAYERbash=5.2.15-2 libc6=2.36-9"
    assert img.packages == ("bash=5.2.15-2", "libc6=2.36-9") and img.damage() is None
    assert stat.S_IMODE(img.initrd.stat().st_mode) == 0o600, "it holds the base's host key"
    assert image.with_packages(base_image, ("bash",)).initrd == img.initrd and len(fake_layers.made) == 1, "cached"
    assert image.with_packages(base_image, ()) == base_image
    fake_layers.sets["bash"] = _pset("bash=5.2.15-2", "libc6=2.36-9+deb12u1")  # a point release
    newer = image.with_packages(base_image, ("bash",))
    assert newer.initrd != img.initrd and len(fake_layers.made) == 2


def test_a_guest_with_packages_has_a_snapshot_of_its_own(base_image, fake_layers, monkeypatch, tmp_path):
    qemu = tmp_path / "qemu"
    qemu.write_bytes(b"q")
    base_image.kernel.root.joinpath("boot").mkdir(parents=True)
    base_image.kernel.vmlinux.write_bytes(b"k")
    monkeypatch.setattr(qemu_mod, "qemu_binary", lambda: str(qemu))
    monkeypatch.setattr(vm_mod, "qemu_version", lambda: "QEMU emulator version 7.2.22")
    monkeypatch.setattr(qemu_mod, "QBOOT", tmp_path / "no-qboot.rom")

    def key(img: image.Image) -> str:
        guest = Vm(img, VmConfig(accel="tcg"))
        guest.accel = "tcg"
        return guest.snapshot().key

    with_bash = image.with_packages(base_image, ("bash",))
    assert key(with_bash) != key(base_image)
    assert key(image.with_packages(base_image, ("bash",))) == key(with_bash)


def test_guest_paths_the_harness_owns_include_its_machinery():
    owned = set(image.HARNESS_OWNED)
    assert {
        "init",
        "etc/passwd",
        "etc/group",
        "bin/busybox",
        "bin/kmod",
        "sbin/modprobe",
        "usr/sbin/dropbear",
        "root/.ssh",
        "bin/racer",
        "bin/harness-seed",
    } <= owned
    assert not any(p.startswith("/") for p in owned)


def test_the_cli_refuses_a_bad_name_before_anything(monkeypatch, capsys, tmp_path):
    from harness import cli
    from harness.cli import guest as guest_cli

    monkeypatch.setattr(guest_cli, "qemu_binary", lambda: "qemu")
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    assert cli.main(["run", "--guest-packages", "bash,", "--", "true"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "empty element" in err[0]
    assert not os.path.exists(tmp_path / "cache" / "kernels"), "refused before the kernel is fetched"
