"""Build roots without network or root: package lists, identities, command
lines, the half-made-root logic and the module cache key."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernels import ROWS, KernelFiles, apt, buildroot, modbuild
from harness.kernels.buildroot import RootSpec
from harness.race import kbuild

MIRRORS = apt.Mirrors("http://mirror.invalid/debian", "http://mirror.invalid/debian-security")


def spec(suite: str = "bookworm") -> RootSpec:
    return buildroot.spec_for(suite, MIRRORS)


@pytest.mark.parametrize(
    "suite,compiler",
    [
        ("bullseye", "gcc-10"),
        ("bookworm", "gcc-12"),
        ("trixie", "gcc-14"),
        ("sid", "gcc-16"),
        ("experimental", "gcc-16"),
    ],
)
def test_each_suite_gets_the_compiler_its_headers_name(suite, compiler):
    s = spec(suite)
    assert compiler in s.packages and "make" in s.packages
    assert [p for p in s.packages if p.startswith("gcc-")] == [compiler]


def test_experimental_builds_in_sids_root():
    assert spec("experimental") == spec("sid")
    assert spec("experimental").identity.startswith("sid-")


def test_kbuild_libraries_match_the_release():
    # linux-kbuild links libelf and libssl; their names changed with the 64-bit time_t transition.
    assert {"libelf1", "libssl1.1"} <= set(spec("bullseye").packages)
    assert {"libelf1", "libssl3"} <= set(spec("bookworm").packages)
    for suite in ("trixie", "sid"):
        assert {"libelf1t64", "libssl3t64", "pahole"} <= set(spec(suite).packages)


def test_unknown_suite_is_one_error():
    with pytest.raises(HarnessError, match="no build root for Debian 'buster'"):
        spec("buster")


def test_identity_follows_suite_packages_and_mirror():
    base = spec("bookworm")
    assert base.identity == spec("bookworm").identity
    assert base.identity.startswith("bookworm-")
    others = {
        spec("trixie").identity,
        RootSpec("bookworm", base.packages + ("bc",), base.mirror).identity,
        RootSpec("bookworm", base.packages, "http://other.invalid/debian").identity,
    }
    assert base.identity not in others and len(others) == 3
    assert base.path(Path("/c")) == Path("/c") / base.identity


def test_mmdebstrap_command_line():
    argv = buildroot.mmdebstrap_argv(spec("bookworm"), Path("/c/.tmp"))
    # mmdebstrap's own mounts live in a private namespace: a killed run leaves none on the host.
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "--fork", "--"]
    assert "--variant=apt" in argv and "--mode=root" in argv
    assert "--include=gcc-12,make,libelf1,libssl3" in argv
    assert not any("Valid-Until" in a for a in argv)
    assert argv[-3:] == [
        "bookworm",
        "/c/.tmp",
        f"deb [signed-by={apt.KEYRING}] http://mirror.invalid/debian bookworm main",
    ]


@pytest.mark.parametrize("suite", ["sid", "experimental"])
def test_stale_suites_accept_an_old_release_file(suite):
    argv = buildroot.mmdebstrap_argv(spec(suite), Path("/t"))
    assert '--aptopt=Acquire::Check-Valid-Until "false"' in argv
    assert argv[-3] == "sid" and argv[-1].endswith(" sid main")


def test_make_command_line():
    assert buildroot.make_argv("7.2.13+deb14-amd64", 2, ["X="]) == [
        "make",
        "-j2",
        "-C",
        "/usr/src/linux-headers-7.2.13+deb14-amd64",
        "M=/harness/src",
        "X=",
        "modules",
    ]


def _fake_tools(tmp_path: Path) -> tuple[Path, Path]:
    """mount and chroot that only log their arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    for tool in ("mount", "chroot"):
        (bindir / tool).write_text(f'#!/bin/sh\necho {tool} "$@" >> {log}\n')
        (bindir / tool).chmod(0o755)
    return bindir, log


@pytest.mark.parametrize("with_src", [True, False])
def test_entering_a_root_mounts_proc_and_source_then_chroots(tmp_path, with_src):
    bindir, log = _fake_tools(tmp_path)
    src = tmp_path / "src" if with_src else None
    argv = buildroot.in_root_argv(Path("/r"), ["make", "modules"], src)
    assert argv[:6] == ["unshare", "--mount", "--propagation", "private", "--fork", "--"]
    # The part after unshare, run with the fake tools: what it mounts and where it chroots.
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    subprocess.run(argv[6:], env=env, check=True)
    calls = log.read_text().splitlines()
    expected = ["mount -t proc proc /r/proc"]
    if with_src:
        expected.append(f"mount --bind {src} /r/harness/src")
    expected.append("chroot /r /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/root make modules")
    assert calls == expected


def test_entering_stops_if_proc_cannot_be_mounted(tmp_path):
    bindir, log = _fake_tools(tmp_path)
    (bindir / "mount").write_text("#!/bin/sh\nexit 32\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    proc = subprocess.run(buildroot.in_root_argv(Path("/r"), ["true"])[6:], env=env)
    assert proc.returncode == 32 and not log.exists()


# ---------------------------------------------------------------- markers and half-made roots


def test_a_root_is_ready_only_with_its_own_marker(tmp_path):
    s = spec()
    path = s.path(tmp_path)
    assert not buildroot.root_ready(path, s)
    (path / ".harness").mkdir(parents=True)
    assert not buildroot.root_ready(path, s)
    (path / buildroot.MARKER).write_text("{trunc")
    assert not buildroot.root_ready(path, s)
    (path / buildroot.MARKER).write_text(spec("trixie").marker_json())
    assert not buildroot.root_ready(path, s)
    (path / buildroot.MARKER).write_text(s.marker_json())
    assert buildroot.root_ready(path, s)


def test_leftovers_are_temp_folders_and_a_markerless_root(tmp_path):
    s = spec()
    (tmp_path / f".{s.identity}.tmp.123").mkdir()
    (tmp_path / f".{spec('trixie').identity}.tmp.9").mkdir()
    assert buildroot.leftovers(tmp_path, s) == [tmp_path / f".{s.identity}.tmp.123"]
    s.path(tmp_path).mkdir()
    assert buildroot.leftovers(tmp_path, s)[-1] == s.path(tmp_path)
    (s.path(tmp_path) / ".harness").mkdir()
    (s.path(tmp_path) / buildroot.MARKER).write_text(s.marker_json())
    assert buildroot.leftovers(tmp_path, s) == [tmp_path / f".{s.identity}.tmp.123"]


@pytest.fixture
def fake_mmdebstrap(monkeypatch):
    """ensure_root without root or network: mmdebstrap makes an empty tree."""
    runs: list[Path] = []
    monkeypatch.setattr(buildroot, "require_privileges", lambda: None)
    monkeypatch.setattr(buildroot, "need_tool", lambda tool, pkg: tool)
    monkeypatch.setattr(buildroot, "progress", lambda line: None)

    def fake(argv, label, tmp):
        tmp.mkdir()
        (tmp / "usr").mkdir()
        runs.append(tmp)

    monkeypatch.setattr(buildroot, "_run_relayed", fake)
    return runs


def test_a_root_is_made_in_a_temp_folder_then_renamed(tmp_path, fake_mmdebstrap):
    s = spec()
    path = buildroot.ensure_root(s, tmp_path)
    assert path == s.path(tmp_path) and buildroot.root_ready(path, s)
    assert fake_mmdebstrap[0].name.startswith(f".{s.identity}.tmp.") and not fake_mmdebstrap[0].exists()
    assert (path / "harness/src").is_dir() and (path / "usr").is_dir()
    assert json.loads((path / buildroot.MARKER).read_text())["packages"] == list(s.packages)
    assert buildroot.ensure_root(s, tmp_path) == path and len(fake_mmdebstrap) == 1


def test_an_interrupted_root_is_redone_never_used(tmp_path, fake_mmdebstrap, monkeypatch):
    s = spec()

    def killed(argv, label, tmp):
        tmp.mkdir()
        (tmp / "half").write_text("")
        raise KeyboardInterrupt

    monkeypatch.setattr(buildroot, "_run_relayed", killed)
    with pytest.raises(KeyboardInterrupt):
        buildroot.ensure_root(s, tmp_path)
    assert not s.path(tmp_path).exists() and len(buildroot.leftovers(tmp_path, s)) == 1
    # A root folder without its marker (copied, or damaged by hand) is not trusted either.
    s.path(tmp_path).mkdir()
    (s.path(tmp_path) / "junk").write_text("")
    monkeypatch.undo()
    monkeypatch.setattr(buildroot, "require_privileges", lambda: None)
    monkeypatch.setattr(buildroot, "need_tool", lambda tool, pkg: tool)
    monkeypatch.setattr(buildroot, "progress", lambda line: None)
    made: list[Path] = []
    monkeypatch.setattr(buildroot, "_run_relayed", lambda argv, label, tmp: (tmp.mkdir(), made.append(tmp)))
    path = buildroot.ensure_root(s, tmp_path)
    assert made and buildroot.root_ready(path, s) and not (path / "junk").exists()
    assert buildroot.leftovers(tmp_path, s) == []


def test_a_folder_with_mounts_is_never_deleted(tmp_path, monkeypatch):
    monkeypatch.setattr(buildroot, "_mounts_under", lambda path: [f"{path}/dev"])
    (tmp_path / "r").mkdir()
    with pytest.raises(HarnessError, match="umount -R"):
        buildroot._remove(tmp_path / "r")
    assert (tmp_path / "r").is_dir()


def test_mounts_under_reads_mountinfo():
    assert buildroot._mounts_under(Path("/proc")) == ["/proc"] or not Path("/proc/self/mountinfo").exists()
    assert buildroot._mounts_under(Path("/nonexistent-folder")) == []


def test_headers_ready_needs_marker_matching_debs_and_makefile(tmp_path):
    abi = "6.1.0-57-amd64"
    stamp = {"linux-headers-6.1.0-57-amd64_6.1.192-3_amd64.deb": "ab" * 32}
    (tmp_path / buildroot.HEADERS_MARKERS).mkdir(parents=True)
    marker = tmp_path / buildroot.HEADERS_MARKERS / f"{abi}.json"
    marker.write_text(json.dumps(stamp))
    assert not buildroot.headers_ready(tmp_path, abi, stamp)  # no Makefile
    makefile = tmp_path / "usr/src" / f"linux-headers-{abi}" / "Makefile"
    makefile.parent.mkdir(parents=True)
    makefile.write_text("include x\n")
    assert buildroot.headers_ready(tmp_path, abi, stamp)
    assert not buildroot.headers_ready(tmp_path, abi, {k: "cd" * 32 for k in stamp})
    assert not buildroot.headers_ready(tmp_path, "6.1.0-58-amd64", stamp)


def test_header_debs_in_unpack_order():
    R = apt.Role
    debs = {
        R.IMAGE: (Path("i.deb"),),
        R.HEADERS: (Path("h.deb"),),
        R.HEADERS_COMMON: (Path("c.deb"),),
        R.KBUILD: (Path("k.deb"),),
    }
    assert buildroot.header_debs(debs) == [Path("c.deb"), Path("k.deb"), Path("h.deb")]
    del debs[R.KBUILD]
    with pytest.raises(HarnessError, match="no kbuild package"):
        buildroot.header_debs(debs)


def test_without_root_one_line_says_what_to_run(monkeypatch):
    monkeypatch.setattr(buildroot.os, "geteuid", lambda: 1000)
    with pytest.raises(HarnessError) as exc:
        buildroot.require_privileges()
    assert "\n" not in str(exc.value) and "run the harness as root" in str(exc.value)


# ---------------------------------------------------------------- the module cache key


def Kernel(suite: str) -> KernelFiles:
    row = ROWS[{"bookworm": "6.1", "trixie": "6.12"}[suite]]
    return KernelFiles(row, "6.1.0-99-amd64", "1", Path("/nonexistent"))


def test_modules_built_in_another_root_are_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(kbuild, "progress", lambda line: None)
    roots: list[str] = []

    def fake_compile(kernel_files, src, jobs, extra=()):
        identity = modbuild.build_identity(kernel_files)
        roots.append(identity)
        for ko in (src / "rc_core.ko", src / "rc_prov0.ko"):
            ko.write_text(identity)
        return subprocess.CompletedProcess([], 0, stdout="  CC [M] x.o\n")

    monkeypatch.setattr(modbuild, "compile_in", fake_compile)
    real_spec_for = buildroot.spec_for
    monkeypatch.setattr(buildroot, "spec_for", lambda suite, mirrors=None: real_spec_for(suite, MIRRORS))
    mset = kbuild.ModuleSetSpec("refcount", providers=1)
    first = kbuild.build(Kernel("bookworm"), mset)
    assert kbuild.build(Kernel("bookworm"), mset).cached
    other = kbuild.build(Kernel("trixie"), mset)
    assert not other.cached and other.build_dir != first.build_dir
    assert roots == [spec("bookworm").identity, spec("trixie").identity]
    assert json.loads((first.build_dir / "manifest.json").read_text())["build_root"] == spec("bookworm").identity
