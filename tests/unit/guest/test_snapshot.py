"""Snapshots without QEMU: the key, the store, the start line, and how
Vm.boot chooses between restoring and a cold boot (and says why)."""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.guest import image as image_mod
from harness.guest import qemu as qemu_mod
from harness.guest import snapshot
from harness.guest import vm as vm_mod
from harness.guest.qmp import Qmp, QmpError
from harness.guest.snapshot import ColdReason, GuestStart, Snapshot, StartPath
from harness.guest.vm import BootOutcome, Vm, VmConfig
from harness.util import try_file_lock


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BUILD", str(tmp_path / "build"))
    return tmp_path / "cache"


@pytest.fixture
def guest_files(tmp_path, monkeypatch):
    """A Vm whose kernel, initramfs and QEMU are plain files here."""
    kernel_file = tmp_path / "vmlinux"
    kernel_file.write_bytes(b"k" * 100)
    initrd = tmp_path / "base-0123" / "initramfs.cpio"
    initrd.parent.mkdir()
    initrd.write_bytes(b"i" * 100)
    monkeypatch.setattr(qemu_mod, "qemu_binary", lambda: str(kernel_file))  # any file stands for the binary
    monkeypatch.setattr(vm_mod, "qemu_version", lambda: "QEMU emulator version 7.2.22")
    monkeypatch.setattr(qemu_mod, "QBOOT", tmp_path / "no-qboot.rom")
    kernel = SimpleNamespace(
        name="6.1", label="6.1", release="6.1.0-1-amd64", time_factor=1.0, cmdline=(), boot_image=kernel_file
    )
    img = SimpleNamespace(kernel=kernel, initrd=initrd, damage=lambda: None, payload=None, modtree=None)

    def make(config: VmConfig = VmConfig(accel="tcg"), port: int = 0) -> Vm:
        guest = Vm(img, config)  # type: ignore[arg-type]
        guest.accel, guest.port = "tcg", port
        return guest

    return SimpleNamespace(make=make, kernel_file=kernel_file, initrd=initrd)


# ---------------------------------------------------------------- the key


def test_the_key_ignores_the_port_and_the_runs_settings(cache, guest_files):
    base = guest_files.make().snapshot().key
    same = [
        guest_files.make(port=40000),
        guest_files.make(VmConfig(accel="tcg", rcu_expedited=True, hung_task_timeout_s=5, boot_timeout_s=9)),
    ]
    assert all(g.snapshot().key == base for g in same)


@pytest.mark.parametrize("change", [{"memory_mb": 2048}, {"cpus": 1}, {"cmdline_extra": ("nokaslr",)}])
def test_the_key_follows_every_machine_option(cache, guest_files, change):
    assert (
        guest_files.make(replace(VmConfig(accel="tcg"), **change)).snapshot().key != guest_files.make().snapshot().key
    )


def test_the_key_follows_the_accelerator_qemu_and_the_files(cache, guest_files, monkeypatch):
    g = guest_files.make()
    base = g.snapshot().key
    g.accel = "kvm"
    assert g.snapshot().key != base
    g.accel = "tcg"
    os.utime(guest_files.kernel_file, ns=(1, 1))  # a re-fetched kernel
    refetched = g.snapshot().key
    assert refetched != base
    monkeypatch.setattr(vm_mod, "qemu_version", lambda: "QEMU emulator version 8.2.0")
    assert g.snapshot().key not in (base, refetched)


# ---------------------------------------------------------------- the store


def _save(snap: Snapshot, ram: bytes = b"r" * 4096) -> Path:
    gen = snap.new_gen()
    (gen / "ram").write_bytes(ram)
    (gen / "state").write_bytes(b"s" * 10)
    snap.commit(gen, {"kernel": "6.1"})
    return gen


def test_a_committed_save_is_current_and_replaces_the_older(cache):
    snap = Snapshot.for_key("k1")
    assert snap.current() == (None, "")  # none yet: missing, not stale
    first = _save(snap)
    assert snap.current() == (first, "")
    second = _save(snap)
    assert snap.current() == (second, "") and sorted(p.name for p in snap.root.glob("gen-*")) == [second.name]


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda gen, meta: os.truncate(gen / "ram", 10), "its ram file changed after it was saved"),
        (lambda gen, meta: (gen / "state").unlink(), "its state file is missing"),
        (
            lambda gen, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "format": 0})),
            "another harness version",
        ),
    ],
)
def test_a_damaged_save_is_stale_with_the_reason(cache, damage, why):
    snap = Snapshot.for_key("k2")
    gen = _save(snap)
    damage(gen, snap.root / snapshot.META)
    current, detail = snap.current()
    assert current is None and why in detail


def test_restore_options_escape_commas_and_map_privately(tmp_path):
    args = snapshot.restore_args(tmp_path / "a,b" / "ram", 1024, share=False)
    obj = args[args.index("-object") + 1]
    assert "mem-path=" + str(tmp_path / "a,,b" / "ram") + "," in obj and obj.endswith("share=off")
    assert args[-2:] == ["-incoming", "defer"]


def test_only_one_process_saves(tmp_path):
    with try_file_lock(tmp_path / ".lock") as first:
        with try_file_lock(tmp_path / ".lock") as second:
            assert first and not second
    with try_file_lock(tmp_path / ".lock") as again:
        assert again


# ---------------------------------------------------------------- the start line


def test_the_start_line_has_the_six_words_init_reads():
    line = image_mod.start_line(bytes(range(64)), 1_796_000_000_123_456_789, True, 5)
    word, seed, sec, nsec, rcu, hung = line.split()
    assert (word, sec, nsec, rcu, hung) == ("start", "1796000000", "123456789", "1", "5")
    assert bytes.fromhex(seed) == bytes(range(64))


def test_a_short_seed_is_refused():
    with pytest.raises(image_mod.HarnessError, match="64 to 512 bytes"):
        image_mod.start_line(b"x" * 8, 0, False, 0)


def test_every_start_types_a_fresh_seed(cache, guest_files, monkeypatch):
    g = guest_files.make()
    sent: list[str] = []
    g.child = SimpleNamespace(send=sent.append)  # type: ignore[assignment]
    monkeypatch.setattr(g, "_expect", lambda wanted, timeout: BootOutcome.READY)
    g._send_start(5)
    g._send_start(5)
    assert len(sent) == 2 and sent[0].split()[1] != sent[1].split()[1] and all(s.endswith("\n") for s in sent)


# ---------------------------------------------------------------- restore or cold


@pytest.fixture
def boots(cache, guest_files, monkeypatch):
    """Vm.boot with the start paths replaced by recorders."""
    monkeypatch.setattr(vm_mod, "damage_of_kernel", lambda k: None)
    monkeypatch.setattr(vm_mod, "choose_accel", lambda requested, k: "tcg")
    said: list[str] = []
    monkeypatch.setattr(vm_mod, "progress", said.append)

    def make(config: VmConfig = VmConfig(accel="tcg"), restore_error: str = ""):
        g = guest_files.make(config)
        calls: list[tuple] = []

        def restore(snap, gen):
            calls.append(("restore", gen.name))
            if restore_error:
                raise vm_mod._RestoreFailed(restore_error)
            g.start = GuestStart(StartPath.RESTORED, snapshot=snap.key)

        def cold(snap, reason, detail):
            calls.append(("cold", snap is not None, reason, detail))
            g.start = GuestStart(StartPath.COLD, reason, detail)

        monkeypatch.setattr(g, "_restore", restore)
        monkeypatch.setattr(g, "_cold_boot", cold)
        monkeypatch.setattr(g, "_install_payload", lambda: calls.append(("payload",)))
        monkeypatch.setattr(g, "kill", lambda: calls.append(("kill",)))
        return g, calls

    return SimpleNamespace(make=make, said=said)


def test_no_snapshot_boots_cold_and_may_save_one(boots):
    g, calls = boots.make()
    g.boot()
    assert calls == [("cold", True, ColdReason.MISSING, ""), ("payload",)]
    assert any("cold boot: no snapshot for this kernel and machine yet" in s for s in boots.said)


def test_a_current_snapshot_is_restored(boots):
    g, _ = boots.make()
    gen = _save(g.snapshot())
    g, calls = boots.make()
    g.boot()
    assert calls == [("restore", gen.name), ("payload",)] and g.start.path is StartPath.RESTORED


def test_a_failed_restore_falls_back_to_a_cold_boot_that_saves_again(boots):
    g, _ = boots.make()
    _save(g.snapshot())
    g, calls = boots.make(restore_error="QEMU left the restore in state 'inmigrate'")
    g.boot()
    assert calls[1:] == [
        ("kill",),
        ("cold", True, ColdReason.FAILED, "QEMU left the restore in state 'inmigrate'"),
        ("payload",),
    ]
    assert any("restoring the snapshot failed: QEMU left the restore" in s for s in boots.said)
    assert g.snapshot().current() == (None, "")  # forgotten, so that the cold boot saves a new one


def test_a_key_whose_saves_fail_twice_in_a_row_is_booted_cold_without_saving(boots):
    g, _ = boots.make()
    snap = g.snapshot()
    _save(snap)
    boots.make(restore_error="first")[0].boot()
    _save(snap)  # the cold boot saved again
    boots.make(restore_error="second")[0].boot()
    g, calls = boots.make()
    g.boot()
    assert calls[0][:3] == ("cold", False, ColdReason.UNSAVABLE) and "the last: second" in calls[0][3]


def test_a_good_restore_clears_a_failure(boots):
    g, _ = boots.make()
    snap = g.snapshot()
    _save(snap)
    boots.make(restore_error="first")[0].boot()
    _save(snap)
    snap.used()  # what a good restore does
    _save(snap)
    boots.make(restore_error="again")[0].boot()
    assert snap.unrestorable() == ""


def test_a_stale_snapshot_is_not_restored(boots):
    g, _ = boots.make()
    gen = _save(g.snapshot())
    (gen / "state").write_bytes(b"other")
    g, calls = boots.make()
    g.boot()
    assert calls[0][:3] == ("cold", True, ColdReason.STALE) and "state file changed" in calls[0][3]


def test_cold_boot_asked_for_never_looks_nor_saves(boots):
    g, _ = boots.make()
    _save(g.snapshot())
    g, calls = boots.make(VmConfig(accel="tcg", cold_boot=True))
    g.boot()
    assert calls == [("cold", False, ColdReason.ASKED, ""), ("payload",)]


def test_a_cold_boot_saves_at_the_wait_marker_and_records_it(cache, guest_files, monkeypatch):
    monkeypatch.setattr(vm_mod, "progress", lambda s: None)
    g = guest_files.make()
    steps: list[str] = []
    monkeypatch.setattr(g, "_spawn", lambda extra=None, note="": steps.append("spawn"))
    monkeypatch.setattr(g, "_wait_boot", lambda: steps.append("wait") or BootOutcome.WAITING)
    monkeypatch.setattr(g, "_save", lambda snap, start: steps.append("save") or True)
    monkeypatch.setattr(g, "_send_start", lambda timeout: steps.append("start") or BootOutcome.READY)
    monkeypatch.setattr(g, "_start_pump", lambda: None)
    snap = g.snapshot()
    g._cold_boot(snap, ColdReason.MISSING, "")
    assert steps == ["spawn", "wait", "save", "start"]
    assert g.start == GuestStart(StartPath.COLD, ColdReason.MISSING, "", snap.key, saved=True)
    steps.clear()
    g._cold_boot(None, ColdReason.ASKED, "")
    assert steps == ["spawn", "wait", "start"] and not g.start.saved


def test_the_start_record_names_the_path_and_the_reason():
    cold = GuestStart(StartPath.COLD, ColdReason.STALE, "its ram file is missing", "abc", saved=True)
    assert cold.to_json() == {
        "path": "cold",
        "reason": "stale",
        "detail": "its ram file is missing",
        "snapshot": "abc",
        "saved": True,
    }
    assert cold.describe() == "cold boot (the snapshot is stale: its ram file is missing), snapshot saved"
    assert GuestStart(StartPath.RESTORED, snapshot="abc").to_json()["path"] == "restored"


# ---------------------------------------------------------------- QMP


def _fake_qemu(sock: socket.socket, replies: list[bytes]) -> threading.Thread:
    def run() -> None:
        f = sock.makefile("rwb")
        f.write(b'{"QMP": {"version": {}}}\n')
        f.flush()
        for reply in replies:
            if not f.readline():
                return
            f.write(reply)
            f.flush()
        sock.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_qmp_skips_events_and_turns_errors_and_exits_into_one_error():
    ours, theirs = socket.socketpair()
    _fake_qemu(
        theirs,
        [
            b'{"return": {}}\n',
            b'{"event": "STOP"}\n{"return": {"status": "paused"}}\n',
            b'{"error": {"class": "GenericError", "desc": "no such file"}}\n',
        ],
    )
    q = Qmp(ours)
    assert q.status() == "paused" and q.events == [{"event": "STOP"}]
    with pytest.raises(QmpError, match="QEMU refused migrate-incoming: no such file"):
        q.cmd("migrate-incoming", uri="exec:cat x")
    with pytest.raises(QmpError, match="QEMU exited"):
        q.cmd("cont")


def test_qmp_reads_a_reset_socket_as_qemu_gone():
    """QEMU that exits with our command unread resets the socket rather than
    closing it (seen on a trixie host): the same one error as a clean close."""
    ours, theirs = socket.socketpair()

    class Reset:
        def __getattr__(self, name):
            return getattr(ours, name)

        def recv(self, n):
            raise ConnectionResetError(104, "Connection reset by peer")

    with pytest.raises(QmpError, match="QEMU exited"):
        Qmp(Reset()).cmd("cont", timeout=2)
    ours.close()
    theirs.close()


def test_qmp_gives_up_on_a_silent_qemu():
    ours, theirs = socket.socketpair()
    with pytest.raises(QmpError, match="did not answer"):
        Qmp(ours).cmd("query-status", timeout=0.2)
    theirs.close()


def test_only_the_most_recently_used_snapshots_are_kept(cache):
    snaps = [Snapshot.for_key(f"k{i}") for i in range(4)]
    for i, snap in enumerate(snaps):
        _save(snap)
        os.utime(snap.root / snapshot.META, (1000 + i, 1000 + i))
    snaps[0].used()  # restored just now: the newest
    dropped = snapshot.prune(keep=2)
    assert sorted(d.name for d in dropped) == ["k1", "k2"]
    assert snaps[0].current()[0] is not None and snaps[3].current()[0] is not None


def test_a_restore_whose_port_was_taken_is_tried_again_and_is_no_snapshot_failure(cache, guest_files, monkeypatch):
    monkeypatch.setattr(vm_mod, "progress", lambda s: None)
    g = guest_files.make()
    g.log_path = cache.parent / "console.log"
    snap = g.snapshot()
    gen = _save(snap)
    consoles = iter(["qemu-system-x86_64: Could not set up host forwarding rule 'tcp:127.0.0.1:5-:22'\n", ""])
    ports: list[int] = []

    def spawn(extra=None, note=""):
        ports.append(g.port)
        g.log_path.write_text(next(consoles))

    def load(gen_):
        if "forwarding" in g.log_path.read_text():
            raise vm_mod._RestoreFailed("QEMU exited")

    monkeypatch.setattr(g, "_spawn", spawn)
    monkeypatch.setattr(g, "_restore_state", load)
    monkeypatch.setattr(g, "_send_start", lambda timeout: BootOutcome.READY)
    monkeypatch.setattr(g, "_start_pump", lambda: None)
    monkeypatch.setattr(g, "kill", lambda: None)
    g._restore(snap, gen)
    assert len(ports) == 2 and g.start.path is StartPath.RESTORED


# ---------------------------------------------------------------- splats at boot

BOOT_WARNING = (
    "[    0.900000] WARNING: CPU: 0 PID: 0 at kernel/fake.c:1 fake_boot_check+0x1/0x2\n"
    "[    0.900001] ---[ end trace 0000000000000000 ]---\n"
)


def test_a_snapshot_whose_base_boot_has_a_splat_is_stale(cache):
    snap = Snapshot.for_key("k1")
    gen = _save(snap)
    (gen / snapshot.BASE_LOG).write_text("[    0.1] Linux version 6.1\n" + BOOT_WARNING)
    assert snap.current() == (None, "its base boot has a splat (WARNING in fake_boot_check)")
    (gen / snapshot.BASE_LOG).write_text("[    0.1] Linux version 6.1\n")
    assert snap.current() == (gen, "")


@pytest.fixture
def splatting_boots(cache, guest_files, monkeypatch, tmp_path):
    """Vm.boot down to the console: each boot prints what the script says before the wait marker."""
    monkeypatch.setattr(vm_mod, "damage_of_kernel", lambda k: None)
    monkeypatch.setattr(vm_mod, "choose_accel", lambda requested, k: "tcg")
    said: list[str] = []
    monkeypatch.setattr(vm_mod, "progress", said.append)

    def make(consoles: list[str], config: VmConfig = VmConfig(accel="tcg")):
        g = guest_files.make(config)
        steps: list[str] = []
        script = iter(consoles)

        def spawn(extra=None, note=""):
            steps.append("spawn")
            with open(g.log_path, "a") as log:
                log.write("# qemu-system-x86_64 ...\n" + next(script) + "HARNESS-GUEST-WAITING\n")

        monkeypatch.setattr(g, "_spawn", spawn)
        monkeypatch.setattr(g, "_wait_boot", lambda: BootOutcome.WAITING)
        monkeypatch.setattr(g, "_save", lambda snap, start: steps.append("save") or True)
        monkeypatch.setattr(g, "_send_start", lambda timeout: BootOutcome.READY)
        monkeypatch.setattr(g, "_start_pump", lambda: None)
        monkeypatch.setattr(g, "_install_payload", lambda: None)
        monkeypatch.setattr(g, "kill", lambda: steps.append("kill"))
        return g, steps

    return SimpleNamespace(make=make, said=said)


def test_a_boot_that_splats_is_not_saved_and_is_booted_once_more(splatting_boots):
    g, steps = splatting_boots.make(["[    0.1] Linux\n" + BOOT_WARNING, "[    0.1] Linux\n"])
    g.boot()
    assert steps == ["spawn", "kill", "spawn", "save"]
    assert g.start.saved and g.boot_splats == ()
    assert any("the boot showed a splat (WARNING in fake_boot_check)" in s for s in splatting_boots.said)


def test_a_boot_that_splats_twice_runs_cold_unsaved_and_carries_its_splats(splatting_boots):
    g, steps = splatting_boots.make([BOOT_WARNING, BOOT_WARNING])
    g.boot()
    assert steps == ["spawn", "kill", "spawn"]
    assert not g.start.saved
    assert [s.title for s in g.boot_splats] == ["WARNING in fake_boot_check"]
    assert any("warning: the boot showed a splat again (WARNING in fake_boot_check)" in s for s in splatting_boots.said)


def test_a_cold_boot_asked_for_is_retried_after_a_splat_too(splatting_boots):
    g, steps = splatting_boots.make([BOOT_WARNING, ""], VmConfig(accel="tcg", cold_boot=True))
    g.boot()
    assert steps == ["spawn", "kill", "spawn"] and g.boot_splats == ()


def test_a_save_that_filled_its_disk_is_told_from_other_failures(tmp_path, monkeypatch):
    free = {"bytes": 0}

    class Vfs:
        f_frsize = 4096

        @property
        def f_bavail(self):
            return free["bytes"] // 4096

    monkeypatch.setattr(snapshot.os, "statvfs", lambda path: Vfs())
    assert snapshot.disk_was_full(tmp_path)
    free["bytes"] = 64 << 20
    assert not snapshot.disk_was_full(tmp_path)
