"""A race exported as a folder reproduces its crash without the harness: a
plain guest of the kernel, the folder copied in, `sh repro.sh`."""

from __future__ import annotations

import io
import tarfile

import pytest

from tests.tools import race_cli

NOOWNER_CRASH = r"BUG: kernel NULL pointer dereference|BUG: unable to handle|general protection fault"


def _tar(folder) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname="repro")
    return buf.getvalue()


@pytest.mark.expect_splat
def test_the_noowner_crash_exported_reproduces_in_a_plain_guest(kernel_spec, kernel, vm, tmp_path):
    folder = tmp_path / "repro"
    proc, report = race_cli(
        kernel_spec.name, tmp_path, "--target", "noowner", "--duration", "5", "--seed", "1", "--export", str(folder)
    )
    assert report is not None and report["runs"][0]["verdict"] == "crashed", proc.stderr[-3000:]
    assert f"reproducer: {folder / 'repro.sh'}" in proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "modules", "racer", "repro.sh"]
    assert kernel.release in (folder / "README.md").read_text()

    # A guest of the same kernel with nothing of the race in it: the plain one.
    assert not vm.ssh.run("test -e /lib/modules/$(uname -r)/extra/harness_noowner.ko").ok
    vm.ssh.run("mkdir -p /root && tar -xf - -C /root", stdin=_tar(folder), check=True)
    start = vm.console_size()
    run = vm.ssh.start("sh /root/repro/repro.sh")
    assert vm.wait_console(NOOWNER_CRASH, 180, start), vm.console_tail()
    res = run.wait(180)
    assert res.exit_status == 1 and "repro.sh: the kernel splatted" in res.stdout, (res.stdout, res.stderr)
