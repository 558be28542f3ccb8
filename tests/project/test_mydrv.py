"""Another project's test of its own module with the harness's pytest plugin.

Run from this folder: pytest --kernel 6.1,6.12,sid   (pytest.ini asks for
bash and python3 in the guest).
"""

from pathlib import Path

HERE = Path(__file__).parent


def test_mydrv_loads_reads_and_unloads(kmod_build, vm_factory):
    vm = vm_factory(modules=kmod_build(HERE / "mydrv"))
    vm.ssh.upload(HERE / "check.sh", "/root/check.sh", 0o755)
    vm.ssh.upload(HERE / "read_greeting.py", "/root/read_greeting.py")
    out = vm.ssh.run("/root/check.sh", check=True).stdout
    assert out.strip() == "mydrv: loaded, read, unloaded"
