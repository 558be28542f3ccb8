#!/bin/sh
# Install what the harness needs on a Debian/Ubuntu host: system packages via
# apt-get when root (otherwise print the exact command), Python packages into
# .venv from pyproject.toml (with the extras dev and report).  Idempotent and
# quick when nothing is missing.  --browser: also Debian's headless Chromium,
# which the HTML report's browser test uses (make test).
set -eu
cd "$(dirname "$0")/.."

PKGS="qemu-system-x86 kmod binutils gdb gcc gcc-12 libc6-dev make patch zstd xz-utils squashfs-tools python3-venv apt-utils mmdebstrap debian-archive-keyring"
if [ "${1:-}" = "--browser" ]; then
	PKGS="$PKGS chromium fonts-dejavu-core"
fi
missing=""
for pkg in $PKGS; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "setup: installing$missing" >&2
		apt-get update -q >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >&2
	else
		echo "setup: missing system packages; run as root:" >&2
		echo "  apt-get update && apt-get install -y$missing" >&2
		exit 1
	fi
fi
# Kernel packages are resolved from apt's lists: refresh them once if empty.
if ! apt-cache show --no-all-versions linux-headers-amd64 >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ]; then apt-get update -q >&2; else
		echo "setup: apt lists are empty; run as root: apt-get update" >&2; exit 1; fi
fi

if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt .venv/.installed ]; then
	echo "setup: creating .venv with the harness and its Python packages" >&2
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip >&2
	.venv/bin/pip install -q -e ".[dev,report]" >&2
	touch .venv/.installed
fi
# The harness is installed editable, so pip compiles none of it; a host that
# sets PYTHONDONTWRITEBYTECODE would then compile all of it at every start
# (about 0.1 s).  Quick when nothing changed.
.venv/bin/python -m compileall -q harness >&2
