"""The harness's own apt catalogue, without network: sources, refresh, staleness, the dependency walk."""

import contextlib
import hashlib
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.kernels import table
from harness.kernels.apt import catalogue as cat
from harness.kernels.apt import downloads, mirrors, stanzas
from harness.kernels.apt.catalogue import Catalogue, ListsMarker, Refresh
from harness.kernels.apt.debs import Package, ResolvedKernel, Role
from harness.kernels.apt.mirrors import Archive, Mirrors
from harness.kernels.apt.walk import walk

MIRRORS = Mirrors("http://mirror.example/debian", "http://mirror.example/debian-security")


# ---------------------------------------------------------------- sources and config


def test_every_release_has_its_updates_and_security_suites_and_sid_experimental_are_alone():
    names = [s.name for s in mirrors.SUITES]
    assert names == [
        "bullseye",
        "bullseye-updates",
        "bullseye-security",
        "bookworm",
        "bookworm-updates",
        "bookworm-security",
        "trixie",
        "trixie-updates",
        "trixie-security",
        "sid",
        "experimental",
    ]
    assert {s.name for s in mirrors.SUITES if s.archive is Archive.SECURITY} == {
        "bullseye-security",
        "bookworm-security",
        "trixie-security",
    }
    assert mirrors.suites_of("bookworm") == ("bookworm", "bookworm-updates", "bookworm-security")
    assert mirrors.suites_of("experimental") == ("experimental", "sid")


def test_sources_are_signed_by_the_keyring_and_only_sid_and_experimental_skip_valid_until():
    for suite in mirrors.SUITES:
        text = cat.sources_text(suite, MIRRORS, Path("/k.gpg"))
        fields = stanzas.parse_control(text)
        assert fields["Suites"] == suite.name
        assert fields["Signed-By"] == "/k.gpg"
        assert fields["Components"] == "main"
        assert fields["URIs"] == (MIRRORS.security if suite.name.endswith("-security") else MIRRORS.main)
        assert ("Check-Valid-Until" in fields) == (suite.name in ("sid", "experimental"))
        if "Check-Valid-Until" in fields:
            assert fields["Check-Valid-Until"] == "no"


def test_apt_config_keeps_every_state_path_inside_the_catalogue(tmp_path):
    text = cat.apt_config(tmp_path)
    dirs = dict(line.rstrip(";").split(" ", 1) for line in text.splitlines() if line.startswith("Dir::"))
    assert dirs.pop("Dir::Etc::SourceList") == '"/dev/null"'
    relative = {"Dir::Cache::Archives", "Dir::Cache::pkgcache", "Dir::Cache::srcpkgcache"}
    for key, value in dirs.items():
        if key not in relative:
            assert value.strip('"').startswith(str(tmp_path) + "/"), key
    for needed in (
        "Dir::Etc::SourceParts",
        "Dir::Etc::Preferences",
        "Dir::Etc::PreferencesParts",
        "Dir::State::Lists",
        "Dir::State::Status",
        "Dir::Cache",
    ):
        assert needed in dirs
    assert 'Acquire::Check-Valid-Until "true";' in text
    assert "#clear APT::Update::Post-Invoke-Success;" in text


def test_the_config_hash_follows_the_archive_and_keyring():
    other = Mirrors("http://other.example/debian", MIRRORS.security)
    assert cat.config_hash(MIRRORS) == cat.config_hash(MIRRORS)
    assert cat.config_hash(MIRRORS) != cat.config_hash(other)
    assert cat.config_hash(MIRRORS) != cat.config_hash(MIRRORS, Path("/other.gpg"))


# ---------------------------------------------------------------- the host's sources name the archive

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""
OTHERS = """\
Types: deb
URIs: https://vendor.example/node
Suites: nodistro
Components: main

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: trixie
"""
ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://old.example/debian bullseye main
deb http://old.example/debian-security bullseye-security main
deb http://ubuntu.example/ubuntu jammy main
"""


def _sources(*files):
    return [s for name, text in files for s in mirrors.parse_host_sources(name, text)]


def test_mirrors_come_from_the_hosts_debian_sources_not_other_vendors():
    found = mirrors.mirrors_from(_sources(("other.sources", OTHERS), ("debian.sources", DEB822)), {})
    assert found == MIRRORS
    found = mirrors.mirrors_from(_sources(("x.list", ONE_LINE)), {})
    assert found == Mirrors("http://old.example/debian", "http://old.example/debian-security")


def test_environment_overrides_the_hosts_sources():
    env = {mirrors.MIRROR_ENV: "http://env.example/debian/", mirrors.SECURITY_ENV: "http://sec.example/ds"}
    assert mirrors.mirrors_from(_sources(("debian.sources", DEB822)), env) == Mirrors(
        "http://env.example/debian", "http://sec.example/ds"
    )


def test_security_archive_is_derived_next_to_the_main_one_when_the_host_has_none():
    main_only = "deb http://mirror.example/debian trixie main\n"
    assert mirrors.mirrors_from(_sources(("sources.list", main_only)), {}) == MIRRORS


@pytest.mark.parametrize(
    "files", [[], [("other.sources", OTHERS)], [("x.list", "deb http://u.example/ubuntu noble main\n")]]
)
def test_a_host_without_debian_sources_is_one_line_naming_the_variable(files):
    with pytest.raises(HarnessError) as e:
        mirrors.mirrors_from(_sources(*files), {})
    assert mirrors.MIRROR_ENV in str(e.value) and "\n" not in str(e.value)


def test_host_mirrors_reads_sources_list_and_parts(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "node.sources").write_text(OTHERS)
    assert mirrors.host_mirrors(tmp_path, {}) == MIRRORS


# ---------------------------------------------------------------- refresh stamp

NOW = 1_800_000_000.0
CONFIG = "abc"


@pytest.mark.parametrize(
    "exists, marker, asked, expected",
    [
        (True, ListsMarker(CONFIG, NOW - 60), False, None),
        (True, ListsMarker(CONFIG, NOW - 60), True, Refresh.ASKED),
        (False, None, False, Refresh.MISSING),
        (True, None, False, Refresh.INCOMPLETE),
        (True, ListsMarker("other", NOW - 60), False, Refresh.CHANGED),
        (True, ListsMarker(CONFIG, NOW - cat.REFRESH_AFTER_S - 1), False, Refresh.OLD),
        (True, ListsMarker(CONFIG, NOW - cat.REFRESH_AFTER_S + 1), False, None),
        (True, ListsMarker(CONFIG, NOW + 3600), False, Refresh.OLD),  # written by a clock that was ahead
    ],
)
def test_refresh_reason(exists, marker, asked, expected):
    assert cat.refresh_reason(exists, marker, CONFIG, NOW, asked) is expected


def test_lists_marker_round_trip_and_garbage():
    m = ListsMarker(CONFIG, NOW)
    assert ListsMarker.parse(m.to_json()) == m
    assert ListsMarker.parse("{") is None
    assert ListsMarker.parse('{"config": "x"}') is None


# ---------------------------------------------------------------- Valid-Until

SID_RELEASE = """\
-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Origin: Debian
Suite: unstable
Codename: sid
Date: Thu, 30 Oct 2026 08:20:41 UTC
Valid-Until: Fri, 06 Nov 2026 08:20:41 UTC
Acquire-By-Hash: yes
"""


def test_valid_until_is_parsed_as_utc():
    assert cat.valid_until(SID_RELEASE) == datetime(2026, 11, 6, 8, 20, 41, tzinfo=timezone.utc)
    assert cat.valid_until("Origin: Debian\n") is None
    assert cat.valid_until("Valid-Until: someday\n") is None


def test_stale_warning_is_one_line_with_the_date():
    until = datetime(2026, 11, 6, 8, 20, 41, tzinfo=timezone.utc)
    line = cat.stale_warning([("sid", until), ("experimental", until)])
    assert line is not None and "\n" not in line
    assert line.startswith("warning: ") and "sid and experimental" in line and "2026-11-06" in line
    two = cat.stale_warning([("sid", until), ("experimental", until.replace(day=5))])
    assert two is not None and "2026-11-06" in two and "2026-11-05" in two
    assert cat.stale_warning([]) is None


def _write_lists(root: Path, suites, release_text=SID_RELEASE, complete=True, config=None):
    gen = root / "lists.1"
    gen.mkdir(parents=True)
    for s in suites:
        (gen / f"mirror.example_debian_dists_{s}_InRelease").write_text(release_text)
    if complete:
        (gen / ".complete.json").write_text(ListsMarker(config or "", NOW).to_json())
    (root / "lists").symlink_to(gen.name)
    return gen


def test_only_suites_allowed_to_be_stale_are_reported(tmp_path):
    c = Catalogue(tmp_path, MIRRORS)
    _write_lists(tmp_path, ["bookworm", "sid", "experimental"])
    after = datetime(2026, 11, 29, tzinfo=timezone.utc)
    assert [name for name, _ in c.expired(after)] == ["sid", "experimental"]
    assert c.expired(datetime(2026, 11, 1, tzinfo=timezone.utc)) == []


# ---------------------------------------------------------------- updates: atomic, redone when interrupted


class FakeApt:
    """Stands in for apt-get update: writes what apt would into the -o Dir::State::Lists folder."""

    def __init__(self, fail=False, interrupt=False, skip=()):
        self.fail, self.interrupt, self.skip, self.calls = fail, interrupt, set(skip), 0

    def __call__(self, argv, **kw):
        if "update" not in argv:
            return subprocess.CompletedProcess(argv, 0, "", "")
        self.calls += 1
        lists = Path(next(a for a in argv if a.startswith("Dir::State::Lists=")).split("=", 1)[1])
        for s in mirrors.SUITES:
            if s.name not in self.skip:
                (lists / f"mirror.example_debian_dists_{s.name}_InRelease").write_text(SID_RELEASE)
            if self.interrupt:
                raise KeyboardInterrupt
        if self.fail:
            return subprocess.CompletedProcess(
                argv,
                100,
                "",
                "Err:1 x\nE: Failed to fetch http://mirror.example/"
                "debian/dists/sid/InRelease  Could not connect\nE: Some index "
                "files failed to download.\n",
            )
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"k")
    monkeypatch.setattr(cat, "progress", lambda msg: None)
    monkeypatch.setattr(downloads, "progress", lambda msg: None)
    return Catalogue(tmp_path / "apt", MIRRORS, keyring)


def test_update_swaps_in_complete_lists_and_then_reuses_them(catalogue, monkeypatch):
    apt = FakeApt()
    monkeypatch.setattr(cat, "run_tool", apt)
    catalogue.update()
    first = catalogue.lists.resolve()
    assert (first / ".complete.json").is_file() and apt.calls == 1
    assert (catalogue.root / "sources.list.d" / "sid.sources").is_file()
    catalogue.update()
    assert apt.calls == 1
    catalogue.update(refresh=True)
    assert apt.calls == 2 and catalogue.lists.resolve() != first


def test_a_failed_update_is_one_line_and_keeps_the_previous_lists(catalogue, monkeypatch):
    monkeypatch.setattr(cat, "run_tool", FakeApt())
    catalogue.update()
    good = catalogue.lists.resolve()
    monkeypatch.setattr(cat, "run_tool", FakeApt(fail=True))
    with pytest.raises(HarnessError) as e:
        catalogue.update(refresh=True)
    msg = str(e.value)
    assert "\n" not in msg and "Could not connect" in msg and mirrors.MIRROR_ENV in msg
    assert catalogue.lists.resolve() == good
    assert [p.name for p in catalogue.root.glob("lists.*")] == [good.name]


def test_an_update_missing_a_suite_is_refused(catalogue, monkeypatch):
    monkeypatch.setattr(cat, "run_tool", FakeApt(skip=["trixie-security"]))
    with pytest.raises(HarnessError, match="trixie-security"):
        catalogue.update()
    assert not catalogue.lists.exists()


def test_an_interrupted_update_is_never_used_and_is_redone(catalogue, monkeypatch):
    monkeypatch.setattr(cat, "run_tool", FakeApt(interrupt=True))
    with pytest.raises(KeyboardInterrupt):
        catalogue.update()
    assert not catalogue.lists.exists()
    apt = FakeApt()
    monkeypatch.setattr(cat, "run_tool", apt)
    catalogue.update()
    assert apt.calls == 1 and (catalogue.lists / ".complete.json").is_file()


def test_lists_without_their_completion_marker_are_fetched_again(catalogue, monkeypatch):
    catalogue.prepare()
    _write_lists(catalogue.root, [s.name for s in mirrors.SUITES], complete=False)
    apt = FakeApt()
    monkeypatch.setattr(cat, "run_tool", apt)
    catalogue.update()
    assert apt.calls == 1


def test_a_missing_keyring_is_one_line_naming_the_package(tmp_path):
    c = Catalogue(tmp_path / "apt", MIRRORS, tmp_path / "nope.gpg")
    with pytest.raises(HarnessError) as e:
        c.update()
    assert "apt-get install debian-archive-keyring" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the dependency walk

SHOW = """\
Package: linux-image-amd64
Version: 6.1.192-3
Depends: linux-image-6.1.0-57-amd64 (= 6.1.192-3)

Package: linux-headers-amd64
Version: 6.1.192-3
Depends: linux-headers-6.1.0-57-amd64 (= 6.1.192-3)

Package: linux-image-6.1.0-57-amd64
Version: 6.1.192-3
Architecture: amd64
Size: 70591024
SHA256: aa
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool

Package: linux-headers-6.1.0-57-amd64
Version: 6.1.192-3
Architecture: amd64
Size: 1841556
Depends: linux-headers-6.1.0-57-common (= 6.1.192-3), linux-kbuild-6.1 (>= 6.1.192-3),
 linux-compiler-gcc-12-x86

Package: linux-headers-6.1.0-57-common
Version: 6.1.192-3
Architecture: all
Size: 10533452

Package: linux-kbuild-6.1
Version: 6.1.192-3
Architecture: amd64
Size: 1567812

Package: linux-kbuild-6.1
Version: 6.1.176-1
Architecture: amd64
Size: 1567000

Package: linux-image-amd64
Version: 6.1.176-1
Depends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)

Package: linux-headers-amd64
Version: 6.1.176-1
Depends: linux-headers-6.1.0-50-amd64 (= 6.1.176-1)

Package: linux-image-6.1.0-50-amd64
Version: 6.1.176-1
Architecture: amd64
Size: 70000000

Package: linux-headers-6.1.0-50-amd64
Version: 6.1.176-1
Architecture: amd64
Size: 1800000
Depends: linux-headers-6.1.0-50-common (= 6.1.176-1), linux-kbuild-6.1 (>= 6.1.176-1)

Package: linux-headers-6.1.0-50-common
Version: 6.1.176-1
Architecture: all
Size: 10000000

Package: linux-image-amd64
Version: 7.2.13-1
Depends: linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-headers-amd64
Version: 7.2.13-1
Depends: linux-headers-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-image-7.2.13+deb14-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Architecture: amd64
Size: 1892
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-headers-7.2.13+deb14-amd64
Version: 7.2.13-1
Architecture: amd64
Size: 1754172
Depends: gcc-16-for-host, linux-base (>= 4.12~), linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-headers-7.2.13+deb14-common (= 7.2.13-1), linux-kbuild-7.2.13+deb14

Package: linux-binary-7.2.13+deb14-amd64
Version: 7.2.13-1
Architecture: amd64
Size: 14252084

Package: linux-modules-7.2.13+deb14-amd64
Version: 7.2.13-1
Architecture: amd64
Size: 110095088

Package: linux-base-7.2.13+deb14-amd64
Version: 7.2.13-1
Architecture: amd64
Size: 469412

Package: linux-headers-7.2.13+deb14-common
Version: 7.2.13-1
Architecture: all
Size: 10509076

Package: linux-kbuild-7.2.13+deb14
Version: 7.2.13-1
Architecture: amd64
Size: 859920

Package: linux-image-amd64
Version: 7.3~rc7-1~exp1
Depends: linux-image-7.3-amd64 (= 7.3~rc7-1~exp1)

Package: linux-headers-amd64
Version: 7.3~rc7-1~exp1
Depends: linux-headers-7.3-amd64 (= 7.3~rc7-1~exp1)

Package: linux-image-7.3-amd64
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1888
Depends: linux-base-7.3-amd64 (= 7.3~rc7-1~exp1), linux-binary-7.3-amd64 (= 7.3~rc7-1~exp1), linux-modules-7.3-amd64 (= 7.3~rc7-1~exp1)

Package: linux-headers-7.3-amd64
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1789528
Depends: gcc-16-for-host, linux-headers-7.3-common (= 7.3~rc7-1~exp1), linux-kbuild-7.3

Package: linux-binary-7.3-amd64
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1

Package: linux-modules-7.3-amd64
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1

Package: linux-base-7.3-amd64
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1

Package: linux-headers-7.3-common
Version: 7.3~rc7-1~exp1
Architecture: all
Size: 1

Package: linux-kbuild-7.3
Version: 7.3~rc7-1~exp1
Architecture: amd64
Size: 1
"""

# Which suite each version of SHOW is in, newest first, as apt-cache madison would say.
WHERE = {"7.3~rc7-1~exp1": "experimental", "7.2.13-1": "sid", "6.1.192-3": "bookworm-security", "6.1.176-1": "bookworm"}


class FakeLookup:
    """apt-cache show / madison answered from the stanzas above (versions newest first as listed)."""

    def __init__(self, text=SHOW, where=WHERE):
        self.stanzas_list = stanzas.parse_stanzas(text)
        self.where = where

    def versions(self, names, suites):
        out = {}
        order = sorted(self.stanzas_list, key=lambda f: list(self.where).index(f["Version"]))
        for f in order:
            if f["Package"] in names and self.where[f["Version"]] in suites:
                out.setdefault(f["Package"], [])
                if f["Version"] not in out[f["Package"]]:
                    out[f["Package"]].append(f["Version"])
        return out

    def stanzas(self, pins):
        return {(f["Package"], f["Version"]): f for f in self.stanzas_list if (f["Package"], f["Version"]) in pins}


def _roles(res):
    return [(p.role, p.pin) for p in res.packages]


def test_walk_classic_image_picks_the_newest_in_the_release_with_matching_headers():
    res = walk(table.ROWS["6.1"], FakeLookup())
    assert res.abi == "6.1.0-57-amd64" and res.version == "6.1.192-3" and not res.split
    assert _roles(res) == [
        (Role.IMAGE, "linux-image-6.1.0-57-amd64=6.1.192-3"),
        (Role.HEADERS, "linux-headers-6.1.0-57-amd64=6.1.192-3"),
        (Role.HEADERS_COMMON, "linux-headers-6.1.0-57-common=6.1.192-3"),
        (Role.KBUILD, "linux-kbuild-6.1=6.1.192-3"),
    ]
    image = res.of(Role.IMAGE)[0]
    assert (image.size, image.sha256, image.deb_name) == (
        70591024,
        "aa",
        "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb",
    )


def test_walk_split_image_adds_binary_modules_and_base():
    res = walk(table.ROWS["sid"], FakeLookup())
    assert res.abi == "7.2.13+deb14-amd64" and res.split
    assert _roles(res) == [
        (Role.IMAGE, "linux-image-7.2.13+deb14-amd64=7.2.13-1"),
        (Role.BINARY, "linux-binary-7.2.13+deb14-amd64=7.2.13-1"),
        (Role.MODULES, "linux-modules-7.2.13+deb14-amd64=7.2.13-1"),
        (Role.BASE, "linux-base-7.2.13+deb14-amd64=7.2.13-1"),
        (Role.HEADERS, "linux-headers-7.2.13+deb14-amd64=7.2.13-1"),
        (Role.HEADERS_COMMON, "linux-headers-7.2.13+deb14-common=7.2.13-1"),
        (Role.KBUILD, "linux-kbuild-7.2.13+deb14=7.2.13-1"),
    ]


def test_walk_rc_takes_experimental_over_sid():
    res = walk(table.ROWS["rc"], FakeLookup())
    assert (res.abi, res.version) == ("7.3-amd64", "7.3~rc7-1~exp1")
    assert res.of(Role.KBUILD)[0].pin == "linux-kbuild-7.3=7.3~rc7-1~exp1"


def test_walk_skips_a_version_the_archive_did_not_serve():
    res = walk(table.ROWS["6.1"], FakeLookup(), frozenset({"linux-image-6.1.0-57-amd64=6.1.192-3"}))
    assert (res.abi, res.version) == ("6.1.0-50-amd64", "6.1.176-1")
    # kbuild is only a >= dependency: the headers' own upload, not the newest one.
    assert res.of(Role.KBUILD)[0].pin == "linux-kbuild-6.1=6.1.176-1"
    with pytest.raises(HarnessError, match="serves no version"):
        walk(table.ROWS["6.1"], FakeLookup(), frozenset({"linux-kbuild-6.1=6.1.192-3", "linux-kbuild-6.1=6.1.176-1"}))


def test_walk_refuses_image_and_headers_of_different_abis():
    text = SHOW.replace(
        "Depends: linux-headers-6.1.0-57-amd64 (= 6.1.192-3)", "Depends: linux-headers-6.1.0-50-amd64 (= 6.1.176-1)"
    )
    with pytest.raises(HarnessError, match="mismatched pair"):
        walk(table.ROWS["6.1"], FakeLookup(text))


def test_walk_refuses_a_release_whose_meta_package_moved_to_another_series():
    row = table.KernelRow("5.10", "bookworm", "amd64", "5.10")
    with pytest.raises(HarnessError, match="now points at 6.1.0-57-amd64, not 5.10"):
        walk(row, FakeLookup())


def test_walk_without_the_meta_package_says_to_refresh():
    with pytest.raises(HarnessError, match="no linux-image-rt-amd64 in Debian bookworm.*--refresh"):
        walk(table.ROWS["6.1-rt"], FakeLookup())


def test_depends_reads_exact_versions_only_and_first_alternatives():
    fields = stanzas.parse_control(SHOW.split("\n\n")[3])
    assert stanzas.depends(fields, r"linux-kbuild-.*") == [stanzas.Dep("linux-kbuild-6.1", None)]
    assert stanzas.depends(fields, r"linux-headers-.*-common") == [
        stanzas.Dep("linux-headers-6.1.0-57-common", "6.1.192-3")
    ]
    alt = {"Depends": "dracut | initramfs-tools (>= 1), linux-base-x (= 2)"}
    assert stanzas.depends(alt, r"initramfs-tools") == []
    assert stanzas.depends(alt, r"linux-base-x") == [stanzas.Dep("linux-base-x", "2")]


MADISON = """\
linux-image-amd64 | 7.3~rc7-1~exp1 | http://mirror.example/debian experimental/main amd64 Packages
linux-image-amd64 |   7.2.13-1 | http://mirror.example/debian sid/main amd64 Packages
linux-image-amd64 |  6.1.192-3 | http://mirror.example/debian-security bookworm-security/main amd64 Packages
linux-image-amd64 |  6.1.176-1 | http://mirror.example/debian bookworm/main amd64 Packages
linux-image-amd64 |  6.1.176-1 | http://mirror.example/debian bookworm-updates/main amd64 Packages
     linux | 6.1.176-1 | http://mirror.example/debian bookworm/main Sources
"""


def test_madison_versions_are_filtered_by_suite_newest_first():
    assert stanzas.versions_from_madison(MADISON, mirrors.suites_of("bookworm")) == {
        "linux-image-amd64": ["6.1.192-3", "6.1.176-1"]
    }
    assert stanzas.versions_from_madison(MADISON, mirrors.suites_of("experimental")) == {
        "linux-image-amd64": ["7.3~rc7-1~exp1", "7.2.13-1"]
    }
    assert stanzas.versions_from_madison(MADISON, ["trixie"]) == {}


def test_rows_and_names():
    assert list(table.ROWS) == [
        "5.10",
        "5.10-rt",
        "6.1",
        "6.1-rt",
        "6.12",
        "6.12-rt",
        "sid",
        "sid-rt",
        "rc",
        "6.12-debug",
        "6.1-debug",
        "sid-debug",
    ]
    assert table.ROWS[table.DEFAULT_KERNEL].release == "bookworm"
    assert table.ROWS["6.12"].release == "trixie" and table.ROWS["rc"].release == "experimental"
    assert [r.name for r in table.parse_specs("sid, 5.10")] == ["sid", "5.10"]
    with pytest.raises(HarnessError, match="valid: 5.10, 5.10-rt"):
        table.parse_specs("7.0")


def test_resolved_kernel_round_trips_through_json():
    res = walk(table.ROWS["sid"], FakeLookup())
    assert ResolvedKernel.from_json(res.row, res.to_json()) == res


def test_deb_name_escapes_an_epoch():
    p = Package("x", "1:2.0-1", "amd64", 1, "", role=Role.KBUILD)
    assert p.deb_name == "x_1%3a2.0-1_amd64.deb"


# ---------------------------------------------------------------- downloads are checked


def _resolved_with(payload: bytes) -> ResolvedKernel:
    pkg = Package("linux-image-x", "1", "amd64", len(payload), hashlib.sha256(payload).hexdigest(), role=Role.IMAGE)
    return ResolvedKernel(table.ROWS["6.1"], "x", "1", (pkg,))


def test_download_fetches_once_and_refuses_a_corrupt_deb(catalogue, monkeypatch, tmp_path):
    good = b"debian package"
    res = _resolved_with(good)
    calls = []

    def fake_apt(payload):
        def run(argv, cwd=None, **kw):
            calls.append(argv)
            (Path(cwd) / res.packages[0].deb_name).write_bytes(payload)
            return subprocess.CompletedProcess(argv, 0, "", "")

        return run

    dest = tmp_path / "debs"
    monkeypatch.setattr(downloads, "run_tool", fake_apt(good[::-1]))
    with pytest.raises(HarnessError, match="does not match the catalogue's size and SHA256"):
        downloads.download(res, dest, catalogue)
    assert not (dest / res.packages[0].deb_name).exists()
    monkeypatch.setattr(downloads, "run_tool", fake_apt(good))
    debs = downloads.download(res, dest, catalogue)
    assert debs[Role.IMAGE][0].read_bytes() == good
    downloads.download(res, dest, catalogue)
    assert len(calls) == 2
    assert "linux-image-x=1" in calls[-1] and "-c" in calls[-1]


def test_an_update_clears_abandoned_folders_and_keeps_one_previous_generation(catalogue, monkeypatch):
    monkeypatch.setattr(cat, "run_tool", FakeApt())
    catalogue.update()
    first = catalogue.lists.resolve()
    abandoned = catalogue.root / "lists.0"
    abandoned.mkdir()
    (catalogue.root / "lists.link.99").symlink_to(abandoned.name)
    catalogue.update(refresh=True)
    second = catalogue.lists.resolve()
    assert not abandoned.exists() and not (catalogue.root / "lists.link.99").is_symlink()
    catalogue.update(refresh=True)
    left = {p.name for p in catalogue.root.glob("lists.*")}
    assert left == {second.name, catalogue.lists.resolve().name} and first.name not in left


def test_update_writes_the_sources_under_its_lock(tmp_path, monkeypatch):
    """Cold cache, pytest -n 2: two processes preparing at once removed each
    other's half-written sources as strays (FileNotFoundError in one)."""
    held: list[bool] = []
    state = {"locked": False}

    @contextlib.contextmanager
    def fake_lock(path):
        state["locked"] = True
        try:
            yield
        finally:
            state["locked"] = False

    monkeypatch.setattr(cat, "file_lock", fake_lock)
    monkeypatch.setattr(cat.Catalogue, "prepare", lambda self: held.append(state["locked"]))
    monkeypatch.setattr(cat, "refresh_reason", lambda *a: None)
    monkeypatch.setattr(cat.Catalogue, "config", property(lambda self: "x"))
    cat.Catalogue(tmp_path / "apt", mirrors.Mirrors("http://m/debian", "http://m/debian-security")).update()
    assert held == [True]


def test_prepare_survives_a_stray_that_another_process_removed(catalogue, monkeypatch):
    parts = catalogue.root / "sources.list.d"
    parts.mkdir(parents=True, exist_ok=True)
    ghost = parts / ".bookworm.sources.999.tmp"
    ghost.write_text("")
    real_iterdir = Path.iterdir

    def iterdir(self):
        items = list(real_iterdir(self))
        if self == parts and ghost.exists():
            ghost.unlink()  # the other process renamed it away meanwhile
        return iter(items)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    catalogue.prepare()
    assert sorted(p.name for p in real_iterdir(parts)) == sorted(f"{s.name}.sources" for s in mirrors.SUITES)
