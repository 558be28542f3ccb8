"""Module builds of any kbuild directory (harness/kernels/modbuild.py), with
kbuild faked: what is hashed, what is cached, how a failure reads."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import cli
from harness.cli import kernel as kernel_cli
from harness.errors import HarnessError
from harness.kernels import ROWS, KernelFiles, modbuild

KERNEL = KernelFiles(ROWS["6.1"], "6.1.0-99-amd64", "1", Path("/nonexistent"))


def module_dir(root: Path) -> Path:
    src = root / "mydrv"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m += mydrv.o\nmydrv-y := a.o b.o\n")
    (src / "a.c").write_text("int a;\n")
    (src / "b.c").write_text("int b;\n")
    (src / "mydrv.h").write_text("#define X 1\n")
    return src


@pytest.fixture
def fake_kbuild(tmp_path, monkeypatch):
    """compile_in as a fake kbuild: every obj-m .o of the Kbuild becomes a
    .ko, a source containing ERROR fails like gcc; the calls are counted."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(modbuild, "build_identity", lambda kernel: "bookworm-test")
    monkeypatch.setattr(modbuild, "progress", lambda line: None)
    calls: list[Path] = []

    def compile_in(kernel, src, jobs=2, extra=()):
        calls.append(src)
        for c in sorted(src.glob("*.c")):
            if "ERROR" in c.read_text():
                return subprocess.CompletedProcess(
                    [],
                    2,
                    stdout=(
                        f"  CC [M]  /harness/src/{c.name}\n/harness/src/{c.name}: In function 'f':\n"
                        f"/harness/src/{c.name}:3:9: error: 'nope' undeclared (first use in this function)\n"
                        f"make[2]: *** [scripts/Makefile.build:250: /harness/src/{c.stem}.o] Error 1\n"
                    ),
                )
        names = [
            w[:-2] for ln in (src / "Kbuild").read_text().splitlines() if ln.startswith("obj-m") for w in ln.split()[2:]
        ]
        (src / "modules.order").write_text("".join(f"/harness/src/{n}.o\n" for n in names))
        for n in names:
            (src / f"{n}.ko").write_text("ko")
        warn = sum("WARN" in c.read_text() for c in src.glob("*.c"))
        return subprocess.CompletedProcess([], 0, stdout="/harness/src/a.c:1:1: warning: x\n" * warn)

    monkeypatch.setattr(modbuild, "compile_in", compile_in)
    return calls


def test_the_sources_are_the_module_folders_own_files_not_kbuild_products(tmp_path):
    src = module_dir(tmp_path)
    for product in ("a.o", "mydrv.ko", "mydrv.mod.c", "mydrv.mod", ".a.o.cmd", "modules.order", "Module.symvers"):
        (src / product).write_text("x")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    (src / "sub").mkdir()
    (src / "sub" / "c.c").write_text("int c;\n")
    assert modbuild.source_files(src) == ["Kbuild", "a.c", "b.c", "mydrv.h", "sub/c.c"]


@pytest.mark.parametrize("make", [lambda d: None, lambda d: (d / "Makefile").write_text("obj-m += x.o\n")])
def test_a_folder_without_kbuild_or_makefile_is_refused(tmp_path, make):
    src = tmp_path / "m"
    src.mkdir()
    (src / "x.c").write_text("")
    make(src)
    if (src / "Makefile").exists():
        assert modbuild.source_files(src) == ["Makefile", "x.c"]
    else:
        with pytest.raises(HarnessError, match="no Kbuild or Makefile"):
            modbuild.source_files(src)


def test_not_a_directory_is_refused(tmp_path):
    with pytest.raises(HarnessError, match="not a directory"):
        modbuild.source_files(tmp_path / "missing")


def test_the_key_follows_content_not_times(tmp_path):
    src = module_dir(tmp_path)

    def key() -> str:
        return modbuild.source_key(KERNEL, src, modbuild.source_files(src), "root")

    first = key()
    st = (src / "a.c").stat()
    os.utime(src / "a.c", ns=(st.st_atime_ns + 10**10, st.st_mtime_ns + 10**10))
    assert key() == first  # touched, unchanged
    (src / "a.c").write_text("int a = 1;\n")
    changed_c = key()
    (src / "Kbuild").write_text("obj-m += mydrv.o\nmydrv-y := a.o b.o\nccflags-y += -DX\n")
    changed_kbuild = key()
    assert len({first, changed_c, changed_kbuild}) == 3
    (src / "b.c").rename(src / "c.c")  # same bytes, another name
    assert key() != changed_kbuild
    assert modbuild.source_key(KERNEL, src, modbuild.source_files(src), "other-root") != key()


def test_an_unchanged_module_is_not_compiled_again_and_a_changed_one_is(tmp_path, fake_kbuild):
    src = module_dir(tmp_path)
    first = modbuild.build_dir(KERNEL, src)
    assert [k.name for k in first.ko_files] == ["mydrv.ko"] and not first.cached
    assert first.ko_files[0].read_text() == "ko"
    (src / "a.c").touch()
    again = modbuild.build_dir(KERNEL, src)
    assert again.cached and again.ko_files == first.ko_files and len(fake_kbuild) == 1
    (src / "b.c").write_text("int b = 2;\n")
    assert not modbuild.build_dir(KERNEL, src).cached and len(fake_kbuild) == 2


def test_the_users_folder_is_never_written(tmp_path, fake_kbuild):
    src = module_dir(tmp_path)
    before = sorted(p.name for p in src.rglob("*"))
    modbuild.build_dir(KERNEL, src)
    assert sorted(p.name for p in src.rglob("*")) == before
    assert fake_kbuild[0] != src


def test_several_obj_m_in_modules_order_order(tmp_path, fake_kbuild):
    src = module_dir(tmp_path)
    (src / "Kbuild").write_text("obj-m += zeta.o alpha.o\n")
    assert [k.name for k in modbuild.build_dir(KERNEL, src).ko_files] == ["zeta.ko", "alpha.ko"]


def test_a_compile_error_is_one_line_with_the_first_error_and_the_log(tmp_path, fake_kbuild):
    src = module_dir(tmp_path)
    (src / "b.c").write_text("int f(void)\n{\n\treturn nope;\n}\n/* ERROR */\n")
    with pytest.raises(HarnessError) as err:
        modbuild.build_dir(KERNEL, src)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("b.c:3: 'nope' undeclared (first use in this function)")
    log = Path(text.split("log: ")[1].rstrip(")"))
    assert "error: 'nope'" in log.read_text()
    assert not list((tmp_path / "cache" / "modbuild").glob("*.tmp"))  # nothing half-made is kept


def test_warnings_are_counted_and_kept_in_the_log(tmp_path, fake_kbuild):
    src = module_dir(tmp_path)
    (src / "a.c").write_text("/* WARN */\n")
    built = modbuild.build_dir(KERNEL, src)
    assert built.warnings == 1 and "warning: x" in built.log.read_text()
    assert modbuild.build_dir(KERNEL, src).warnings == 1  # and remembered when cached


@pytest.mark.parametrize(
    "log, line",
    [
        (
            "/harness/src/x.c:12:5: error: expected ';' before '}' token\nmake[1]: *** [x] Error 1\n",
            "x.c:12: expected ';' before '}' token",
        ),
        (
            "/cache/modbuild/k.tmp/src/sub/y.c:7: fatal error: nope.h: No such file or directory\n",
            "sub/y.c:7: nope.h: No such file or directory",
        ),
        (
            'ERROR: modpost: "missing_symbol" [/harness/src/mydrv.ko] undefined!\nmake[2]: *** [Module.symvers] Error 1\n',
            'modpost: "missing_symbol" undefined!',
        ),
        (
            "make[1]: *** No rule to make target '/harness/src/z.o', needed by '/harness/src/m.o'.  Stop.\n",
            "No rule to make target 'z.o', needed by 'm.o'.  Stop.",
        ),
        ("something odd\nthe last line\n", "the last line"),
    ],
)
def test_first_error(log, line):
    assert modbuild.first_error(log, ("/harness/src", "/cache/modbuild/k.tmp/src")) == line


def test_modules_order_lists_ko_or_o(tmp_path):
    (tmp_path / "modules.order").write_text("/harness/src/a.ko\nsub/b.o\n")
    assert modbuild.built_modules(tmp_path) == [tmp_path / "a.ko", tmp_path / "sub" / "b.ko"]


def test_cli_build_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    assert cli.main(["build", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Kbuild or Makefile" in err


def test_cli_build_prints_one_line_per_kernel_and_a_compile_error_exits_2(tmp_path, fake_kbuild, monkeypatch, capsys):
    monkeypatch.setattr(
        cli.kernels, "fetch", lambda spec, quiet=False: KernelFiles(spec, f"{spec.name}-rel", "1", tmp_path)
    )
    monkeypatch.setattr(kernel_cli, "progress", lambda line: None)
    src = module_dir(tmp_path)
    assert cli.main(["build", "--kernel", "6.1,6.12", str(src)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in out] == ["6.1 6.1-rel", "6.12 6.12-rel"]
    assert all(ln.endswith("/mydrv.ko") for ln in out)
    (src / "a.c").write_text("/* ERROR */\n")
    assert cli.main(["build", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: a.c:3: 'nope' undeclared") and err.count("\n") == 1
