"""How long a race took to catch its splat: the splat's printk time read on
the timeline's axis (the roles' start on the guest's CLOCK_MONOTONIC)."""

from __future__ import annotations

from harness.guest.splat import Splat, SplatKind
from harness.race.outcomes import RunResult
from harness.race.racer import UnloadWindow
from harness.race.timeline import Timeline

SPLAT = Splat.from_lines(
    SplatKind.KASAN,
    "KASAN: slab-use-after-free Read in uf_ctl_write",
    ("[   29.820576] BUG: KASAN: slab-use-after-free in uf_ctl_write+0x5a3/0x690 [uf_core]", "[   29.820942] Read"),
)


def _windows(*deleted_ms: float) -> tuple[UnloadWindow, ...]:
    return tuple(UnloadWindow(d - 10, d, d + 5) for d in deleted_ms)


def test_the_first_splat_is_placed_on_the_timeline_with_the_unloads_before_it():
    tl = Timeline(windows=_windows(100.0, 2000.0, 3000.0) + (UnloadWindow(1, 2, 3, "ENOENT"),), origin_s=27.5)
    run = RunResult("refcount", "lookup", splats=[SPLAT], timeline=tl)
    assert run.first_splat_ms == 2320.576
    doc = run.to_json()
    assert (doc["first_splat_ms"], doc["unloads_before_splat"]) == (2320.576, 2)  # the ENOENT one is no unload
    assert RunResult.from_json(doc).timeline.origin_s == 27.5


def test_no_time_without_a_splat_an_origin_or_a_timestamp():
    assert RunResult("refcount", "lookup", timeline=Timeline(origin_s=1.0)).first_splat_ms is None
    assert RunResult("refcount", "lookup", splats=[SPLAT], timeline=Timeline()).first_splat_ms is None  # an old report
    bare = Splat.from_lines(SplatKind.OOPS, "oops", ("BUG: unable to handle page fault",))
    assert (
        RunResult("refcount", "lookup", splats=[bare], timeline=Timeline(origin_s=1.0)).to_json()["first_splat_ms"]
        is None
    )
