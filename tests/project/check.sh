#!/bin/bash
# The project's guest-side check, in bash (arrays, [[ ]]): load, read through
# the python3 helper, unload.
set -euo pipefail
modprobe mydrv
[[ -c /dev/mydrv ]] || { echo "no /dev/mydrv after modprobe" >&2; exit 1; }
readarray -t lines < <(python3 /root/read_greeting.py /dev/mydrv)
[[ ${#lines[@]} -eq 1 && ${lines[0]} == "hello from mydrv" ]] || { echo "read: ${lines[*]}" >&2; exit 1; }
rmmod mydrv
if grep -qw '^mydrv' /proc/modules; then echo "mydrv still loaded" >&2; exit 1; fi
echo "mydrv: loaded, read, unloaded"
