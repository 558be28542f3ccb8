"""Splat frames decoded by the kernel's decode_stacktrace.sh: what it is
given (vmlinux, the splat's modules under one folder) and what comes back."""

from __future__ import annotations

from pathlib import Path

from harness.guest import symbolize
from harness.guest.splat import parse
from harness.race.outcomes import splat_json, splats_from_json

OOPS = (
    "[   12.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n"
    "[   12.000001] RIP: 0010:nown_read+0x10/0x30 [harness_noowner]\n"
    "[   12.000002] Modules linked in: harness_noowner(OE) virtio_net\n"
    "[   12.000003] ---[ end trace 0000000000000000 ]---\n"
)

# A stand-in for decode_stacktrace.sh VMLINUX BASE MODPATH: each frame gets
# a file:line, and it says which .ko files it found under MODPATH.
FAKE = """#!/bin/bash
echo "args: $1|$2|$(cd "$3" && ls)"
while IFS= read -r line; do
    case "$line" in *+0x*) echo "$line fake.c:12" ;; *) echo "$line" ;; esac
done
"""


def test_frames_come_back_with_file_and_line_and_the_splats_modules_are_found(tmp_path):
    script = tmp_path / "decode_stacktrace.sh"
    script.write_text(FAKE)
    ko = tmp_path / "harness_noowner.ko"
    ko.write_bytes(b"\x7fELF")
    other = tmp_path / "unrelated.ko"
    other.write_bytes(b"\x7fELF")
    dec = symbolize.Decoder(script, Path("/k/vmlinux"), {"harness_noowner": ko, "unrelated": other})
    (splat,) = symbolize.decode(dec, parse(OOPS))
    assert splat.decoded[0] == "args: /k/vmlinux||harness_noowner.ko", "only the splat's own modules"
    assert "RIP: 0010:nown_read+0x10/0x30 [harness_noowner] fake.c:12" in splat.decoded[2]
    (again,) = splats_from_json([splat_json(splat)])
    assert again.decoded == splat.decoded and again == splat


def test_a_failing_decoder_leaves_the_splat_as_it_was(tmp_path):
    script = tmp_path / "decode_stacktrace.sh"
    script.write_text("#!/bin/bash\necho broken; exit 1\n")
    (splat,) = symbolize.decode(symbolize.Decoder(script, Path("/k/vmlinux"), {}), parse(OOPS))
    assert splat.decoded == () and "decoded" not in splat_json(splat)
