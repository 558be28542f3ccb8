"""Cached artifacts carry their size and hash, are checked where used, and are
rebuilt (with a progress line saying why) when damaged; private keys and the
images that carry them are owner-only.  No VM, no download: the expensive
steps are replaced by small fakes."""

from __future__ import annotations

import json
import lzma
import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness import kernels, util
from harness.guest import image
from harness.kernels import ROWS, KernelFiles, KernelRow, repair, unpack
from harness.kernels.apt import Package, ResolvedKernel, Role
from harness.kernels.files import files_of
from harness.kernels.vmlinux import extract_vmlinux
from harness.util import Stamp, damage


@pytest.fixture
def said(monkeypatch):
    lines: list[str] = []
    for mod in (image, unpack, util):
        monkeypatch.setattr(mod, "progress", lines.append)
    return lines


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- stamps


def test_a_stamp_catches_truncation_at_once_and_same_size_edits_in_a_new_process(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    f = tmp_path / "blob"
    f.write_bytes(b"a" * 1000)
    stamp = Stamp.of(f)
    assert damage(f, stamp) is None
    st = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    util._HASHED.clear()  # as in the next process
    assert "sha256" in damage(f, stamp)
    f.write_bytes(b"a" * 10)
    assert damage(f, stamp) == "blob is damaged (size 10, expected 1000)"
    assert damage(f, None).endswith("(cached by an older harness)")
    f.unlink()
    assert damage(f, stamp) == "blob is missing"


def test_a_touched_but_intact_file_is_still_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    f = tmp_path / "blob"
    f.write_bytes(b"x" * 100)
    stamp = Stamp.of(f)
    os.utime(f, ns=(1, 1))
    assert damage(f, stamp) is None


# ---------------------------------------------------------------- initramfs


@pytest.fixture
def fake_image_inputs(cache, monkeypatch, tmp_path):
    userland = tmp_path / "userland" / "root"
    userland.mkdir(parents=True)
    (userland.parent / ".unpacked").write_text("pkgs")
    hkey = tmp_path / "hostkey"
    hkey.write_text("private")
    monkeypatch.setattr(image, "guest_userland", lambda: userland)
    monkeypatch.setattr(image, "host_key", lambda u: (hkey, "ecdsa-sha2-nistp256 AAAA"))
    built: list[int] = []

    def assemble(*args):
        built.append(1)
        return b"070701" + b"\0" * 5000

    monkeypatch.setattr(image, "_assemble", assemble)
    programs = {}
    for dest in (image.SEED_PATH, "/bin/racer"):
        programs[dest] = tmp_path / Path(dest).name
        programs[dest].write_bytes(b"\x7fELF " + dest.encode())
    monkeypatch.setattr(image, "_guest_programs", lambda: programs)
    return KernelFiles(ROWS["6.1"], "6.1.0-1-amd64", "6.1.1-1", tmp_path / "kernel"), built


def test_a_truncated_initramfs_is_rebuilt_with_the_reason(fake_image_inputs, said):
    kernel, built = fake_image_inputs
    img = image.build_image(kernel)
    assert built == [1] and img.damage() is None
    assert image.build_image(kernel).initrd == img.initrd and built == [1]  # cached
    os.truncate(img.initrd, 100)
    assert img.damage() == f"initramfs.cpio is damaged (size 100, expected {img.initrd_stamp.size})"
    said.clear()
    again = image.build_image(kernel)
    assert built == [1, 1] and again.damage() is None and again.initrd.stat().st_size == img.initrd_stamp.size
    assert any("is damaged (size 100, expected" in s and "rebuilding" in s for s in said), said


def test_an_initramfs_without_a_recorded_hash_is_rebuilt(fake_image_inputs, said):
    kernel, built = fake_image_inputs
    img = image.build_image(kernel)
    meta = img.initrd.parent / "image.json"
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "initrd"}))
    image.build_image(kernel)
    assert built == [1, 1] and any("older harness" in s for s in said)


def test_images_and_keys_are_owner_only_and_old_caches_are_fixed(fake_image_inputs, cache):
    kernel, _ = fake_image_inputs
    img = image.build_image(kernel)
    assert _mode(cache / "images") == 0o700 and _mode(img.initrd.parent) == 0o700 and _mode(img.initrd) == 0o600
    assert _mode(img.ssh_key) == 0o600 and _mode(img.ssh_key.parent) == 0o700
    for path, mode in (
        (cache / "images", 0o755),
        (img.initrd.parent, 0o755),
        (img.initrd, 0o644),
        (img.ssh_key, 0o644),
        (img.ssh_key.parent, 0o755),
    ):
        path.chmod(mode)
    image.build_image(kernel)
    assert _mode(cache / "images") == 0o700 and _mode(img.initrd.parent) == 0o700 and _mode(img.initrd) == 0o600
    assert _mode(img.ssh_key) == 0o600 and _mode(img.ssh_key.parent) == 0o700


def test_module_sets_share_the_base_and_differ_in_their_payload(fake_image_inputs, tmp_path, monkeypatch):
    import io
    import tarfile

    kernel, built = fake_image_inputs
    monkeypatch.setattr(image, "check_kmods", lambda k, names: tuple(names))
    monkeypatch.setattr(image, "module_closure", lambda k, names: [])
    monkeypatch.setattr(
        image, "_depmod", lambda k, mods, in_tree: {"modules.dep": "".join(f"extra/{m.name}:\n" for m in mods).encode()}
    )
    kos = []
    for name in ("a.ko", "b.ko"):
        kos.append(tmp_path / name)
        kos[-1].write_bytes(b"\x7fELF " + name.encode())
    racer = tmp_path / "extra-file"
    racer.write_bytes(b"data")
    plain = image.build_image(kernel)
    one = image.build_image(kernel, (kos[0],), (image.GuestExtra(racer, "/opt/x", 0o700),))
    two = image.build_image(kernel, (kos[1],))
    assert plain.initrd == one.initrd == two.initrd and built == [1]  # one base, built once
    assert plain.payload is None and one.payload != two.payload
    with tarfile.open(fileobj=io.BytesIO(one.payload.read_bytes())) as tar:
        files = {m.name: (m.mode, tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile()}
        dirs = [m.name for m in tar.getmembers() if m.isdir()]
    mdir = f"lib/modules/{kernel.release}"
    assert files == {
        f"{mdir}/extra/a.ko": (0o644, b"\x7fELF a.ko"),
        f"{mdir}/modules.dep": (0o644, b"extra/a.ko:\n"),
        "opt/x": (0o700, b"data"),
    }
    assert dirs.index(f"{mdir}/extra") > dirs.index(mdir)  # parents first, for busybox tar
    assert one.modules == ("a",) and one.damage() is None
    one.payload.write_bytes(b"x")
    assert "payload.tar is damaged" in one.damage()


# ---------------------------------------------------------------- kernel


RELEASE = "6.1.0-99-amd64"
ELF = b"\x7fELF" + bytes(range(256)) * 64


@pytest.fixture
def unpacked(cache, monkeypatch):
    """A fake unpacked kernel as fetch() leaves it (the download replaced by files)."""
    spec = KernelRow("6.1", "6.1", "linux-image-amd64", "linux-headers-amd64")
    res = ResolvedKernel(
        spec,
        RELEASE,
        "6.1.99-1",
        (Package("linux-image-6.1.0-99-amd64", "6.1.99-1", "amd64", 1, "0" * 64, role=Role.IMAGE),),
    )
    monkeypatch.setattr(unpack, "resolve", lambda s: res)
    unpacks: list[str] = []

    def fake_unpack(spec, res):
        unpacks.append(spec.name)
        files = files_of(res)
        boot = files.root / "boot"
        boot.mkdir(parents=True, exist_ok=True)
        files.vmlinuz.write_bytes(b"MZ-bzImage-header" + lzma.compress(ELF, format=lzma.FORMAT_XZ))
        (boot / f"config-{RELEASE}").write_text("CONFIG_X=y\n")
        files.modules_dir.mkdir(parents=True, exist_ok=True)
        for meta in ("modules.dep", "modules.order", "modules.builtin", "modules.builtin.modinfo"):
            (files.modules_dir / meta).write_text(meta)
        extract_vmlinux(files.vmlinuz, files.vmlinux)
        repair.write_marker(res)
        return files

    monkeypatch.setattr(unpack, "_unpack", fake_unpack)
    files = kernels.fetch(spec)
    return spec, files, unpacks


def test_fetch_says_cached_only_for_an_intact_kernel(unpacked, said):
    spec, files, unpacks = unpacked
    said.clear()
    kernels.fetch(spec)
    assert unpacks == ["6.1"] and said == [f"kernel 6.1: {RELEASE} (6.1.99-1) already cached"]


def test_a_truncated_vmlinux_is_extracted_again(unpacked, said):
    spec, files, unpacks = unpacked
    os.truncate(files.vmlinux, 1000)
    assert "vmlinux-6.1.0-99-amd64 is damaged (size 1000" in kernels.damage_of_kernel(files)
    assert [s for _, _, s in kernels.status() if s.startswith("damaged")]
    said.clear()
    kernels.fetch(spec)
    assert files.vmlinux.read_bytes() == ELF and unpacks == ["6.1"]
    assert "is damaged (size 1000" in said[0] and "repairing" in said[0]
    assert kernels.damage_of_kernel(files) is None


def test_other_damage_unpacks_the_kernel_again(unpacked, said):
    spec, files, unpacks = unpacked
    (files.modules_dir / "modules.dep").write_text("")
    kernels.fetch(spec)
    assert unpacks == ["6.1", "6.1"] and any("modules.dep is damaged" in s for s in said)
    assert kernels.damage_of_kernel(files) is None


def test_a_kernel_cached_by_an_older_harness_gets_a_fresh_vmlinux_and_stamps(unpacked, said):
    spec, files, unpacks = unpacked
    marker = files.root.parent / ".unpacked.json"
    marker.write_text(json.dumps({"abi": RELEASE, "version": "6.1.99-1", "packages": []}))
    os.truncate(files.vmlinux, 10)
    kernels.fetch(spec)
    assert files.vmlinux.read_bytes() == ELF and unpacks == ["6.1"]
    assert "files" in json.loads(marker.read_text()) and kernels.damage_of_kernel(files) is None


# ---------------------------------------------------------------- racer and modules


def test_a_damaged_racer_binary_is_rebuilt(cache, monkeypatch):
    from harness.guest import programs

    racer = programs.build_racer()
    size = racer.stat().st_size
    os.truncate(racer, 100)
    lines: list[str] = []
    monkeypatch.setattr(programs, "progress", lines.append)
    again = programs.build_racer()
    assert again == racer and again.stat().st_size == size
    assert lines[0] == f"racer: cached racer is damaged (size 100, expected {size}); rebuilding"


FAKE_KBUILD = """modules:
\tcd $(M) && for f in *_prov*.c; do echo ko > $${f%.c}.ko; done
\tcd $(M) && for f in *_core_main.c; do echo ko > $${f%_main.c}.ko; done
"""


def test_a_damaged_module_is_rebuilt(cache, tmp_path, monkeypatch):
    from harness.race import kbuild

    headers = tmp_path / "headers"
    headers.mkdir()
    (headers / "Makefile").write_text(FAKE_KBUILD)
    kernel = KernelFiles(ROWS["6.1"], "6.1.0-99-amd64", "v", tmp_path / "root")
    monkeypatch.setattr(KernelFiles, "headers_dir", property(lambda self: headers))

    def host_make(kernel_files, src, jobs, extra=()):  # the fake kbuild, not a build root
        return subprocess.run(
            ["make", "-C", str(headers), f"M={src}", "modules"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    monkeypatch.setattr(kbuild.modbuild, "compile_in", host_make)
    lines: list[str] = []
    monkeypatch.setattr(kbuild, "progress", lines.append)
    spec = kbuild.ModuleSetSpec("refcount", providers=1)
    first = kbuild.build(kernel, spec)
    assert not first.cached and kbuild.build(kernel, spec).cached
    first.ko_files[-1].write_bytes(b"k")
    lines.clear()
    again = kbuild.build(kernel, spec)
    assert not again.cached and again.ko_files[-1].read_bytes() == b"ko\n"
    assert lines[0].endswith(f"cached {first.ko_files[-1].name} is damaged (size 1, expected 3); rebuilding")


def test_a_public_key_line_is_reused_only_for_the_same_private_key(cache):
    key, pub = image.client_key()
    assert image._known_public(key) == pub and image.client_key() == (key, pub)
    key.write_bytes(key.read_bytes() + b"\n")  # another key now: derive its line again
    assert image._known_public(key) is None


# ---------------------------------------------------------------- util.cached: the one cache pattern


class _Artefact:
    """A folder with one file and a manifest (key and stamp), made with util.cached."""

    def __init__(self, base: Path) -> None:
        self.final = base / "art"
        self.lock = base / "art.lock"
        self.builds = 0
        self.fail = False

    def reuse(self, key: str) -> Path | None:
        manifest = util.read_json_object(self.final / "manifest.json")
        if manifest.get("key") != key:
            return None
        if util.damage_of(self.final, manifest.get("files"), ["blob"]) is not None:
            return None
        return self.final

    def build(self, key: str, dest: Path) -> Path:
        self.builds += 1
        dest.mkdir()
        (dest / "blob").write_text(f"made for {key}")
        if self.fail:
            raise RuntimeError("build broke")
        (dest / "manifest.json").write_text(json.dumps({"key": key, "files": util.stamps_of(dest, ["blob"])}))
        return self.final

    def get(self, key: str = "k1") -> Path:
        return util.cached(
            self.final,
            self.lock,
            lambda: self.reuse(key),
            lambda d: self.build(key, d),
            tmp=self.final.with_name(".art.tmp"),
        )


def test_cached_builds_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    assert art.get() == art.final
    assert (art.final / "blob").read_text() == "made for k1"
    assert art.get() == art.final
    assert art.builds == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art", "art.lock"]


def test_cached_rebuilds_on_a_key_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    art.get("k1")
    art.get("k2")
    assert art.builds == 2
    assert (art.final / "blob").read_text() == "made for k2"
    assert not (tmp_path / ".art.tmp").exists()


def test_cached_rebuilds_a_damaged_artefact(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    art.get()
    (art.final / "blob").write_text("truncated")
    art.get()
    assert art.builds == 2
    assert (art.final / "blob").read_text() == "made for k1"


def test_a_failed_build_publishes_nothing_leaves_no_tmp_and_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    art.fail = True
    with pytest.raises(RuntimeError, match="build broke"):
        art.get()
    assert not art.final.exists()
    assert not (tmp_path / ".art.tmp").exists()
    art.fail = False
    assert art.get() == art.final
    assert art.builds == 2


def test_a_failed_rebuild_keeps_no_tmp_and_the_old_artefact_is_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    art.get("k1")
    art.fail = True
    with pytest.raises(RuntimeError):
        art.get("k2")
    assert not (tmp_path / ".art.tmp").exists()
    art.fail = False
    art.get("k2")
    assert art.builds == 3


def test_half_made_leftovers_are_cleared_before_building(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    (tmp_path / ".art.tmp").mkdir()
    (tmp_path / ".art.tmp" / "junk").write_text("from an interrupted run")
    art.final.mkdir()
    (art.final / "blob").write_text("no manifest: never published")
    art.get()
    assert sorted(p.name for p in art.final.iterdir()) == ["blob", "manifest.json"]
    assert not (tmp_path / ".art.tmp").exists()


def test_cached_in_place_clears_leftovers_and_builds_into_final(tmp_path):
    final = tmp_path / "root"
    stale = tmp_path / "debs"
    stale.mkdir()
    marker = tmp_path / ".done"
    built: list[Path] = []

    def build(dest: Path) -> Path:
        assert not stale.exists()
        built.append(dest)
        dest.mkdir()
        marker.write_text("x")
        return dest

    def get() -> Path:
        return util.cached(
            final, tmp_path / ".lock", lambda: final if marker.is_file() else None, build, leftovers=lambda: [stale]
        )

    assert get() == final and get() == final
    assert built == [final]


def test_two_threads_at_once_build_once(tmp_path, monkeypatch):
    import threading
    import time

    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    slow_build = art.build

    def build(key: str, dest: Path) -> Path:
        time.sleep(0.2)  # the other thread arrives while this one builds
        return slow_build(key, dest)

    art.build = build  # type: ignore[method-assign]
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(art.get())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [art.final, art.final]
    assert art.builds == 1


def _build_in_a_process(base: str, counter: str) -> None:
    import time

    final = Path(base) / "art"

    def build(dest: Path) -> Path:
        with open(counter, "a") as fh:
            fh.write("built\n")
        time.sleep(0.3)
        dest.mkdir()
        (dest / "done").write_text("")
        return final

    util.cached(
        final,
        Path(base) / "art.lock",
        lambda: final if (final / "done").is_file() else None,
        build,
        tmp=Path(base) / ".art.tmp",
    )


def test_two_processes_at_once_build_once(tmp_path):
    import multiprocessing

    counter = tmp_path / "count"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_a_process, args=(str(tmp_path), str(counter))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text() == "built\n"
    assert (tmp_path / "art" / "done").is_file()


def test_clean_failed_false_leaves_the_tmp_for_the_next_leftovers(tmp_path, monkeypatch):
    monkeypatch.setattr(util, "_HASHED", {})
    art = _Artefact(tmp_path)
    tmp = tmp_path / ".art.tmp"
    cleared: list[str] = []

    def leftovers():
        for old in tmp_path.glob(".art.tmp*"):
            cleared.append(old.name)
            yield old

    def get() -> Path:
        return util.cached(
            art.final,
            art.lock,
            lambda: art.reuse("k1"),
            lambda d: art.build("k1", d),
            tmp=tmp,
            leftovers=leftovers,
            clean_failed=False,
        )

    art.fail = True
    with pytest.raises(RuntimeError):
        get()
    assert tmp.is_dir() and not art.final.exists()
    art.fail = False
    assert get() == art.final and cleared == [".art.tmp"] and not tmp.exists()
