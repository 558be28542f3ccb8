#!/bin/bash
# Run the README's two commands (make test, make race) as a new user would, on
# a Debian 13 (trixie) host: a trixie root made with mmdebstrap (its own
# python3, QEMU, gcc, kmod), a clean clone of the committed HEAD in it, both
# commands run chrooted in a private mount and PID namespace.
#
#   scripts/host-check.sh              make (or reuse) the root, then run both commands
#   scripts/host-check.sh --root-only  only make (or reuse) the root; boots nothing
#
# Needs root (mmdebstrap --mode=root, mount, chroot).  The root lives in
# .cache/host-check/trixie (about 1 GB), logs in build/host-check/STAMP/.
# Exits non-zero if either command fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$(pwd)

SUITE=trixie
# What scripts/setup.sh checks for (less libc6-dev, so that its install path
# runs too), what the harness's own build roots use (mmdebstrap, unshare,
# mount: required priority on any real install, not in --variant=apt), git.
PKGS="python3 python3-venv qemu-system-x86 gcc gcc-12 make git kmod binutils zstd xz-utils apt-utils
mmdebstrap debian-archive-keyring ca-certificates util-linux mount procps"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
CACHE="${HARNESS_CACHE:-$PROJECT/.cache}/host-check"
BUILD="${HARNESS_BUILD:-$PROJECT/build}/host-check"
ROOT="$CACHE/$SUITE"
MARKER="$ROOT/.host-check.json"
PY=.venv/bin/python

say() { echo "host-check: $*" >&2; }
die() { echo "host-check: error: $*" >&2; exit 2; }

root_only=0
case "${1:-}" in
	"") ;;
	--root-only) root_only=1 ;;
	*) die "unknown argument ${1}; usage: scripts/host-check.sh [--root-only]" ;;
esac

[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, mount, chroot): sudo make host-check"
for tool in mmdebstrap unshare chroot git; do
	command -v "$tool" >/dev/null || die "$tool is missing; run: apt-get install -y mmdebstrap util-linux git"
done
[ -x "$PY" ] || die "$PY is missing; run: make setup"

# The archive the host's apt sources name, read exactly as the harness reads it.
mirrors=$("$PY" - <<'EOF'
import sys
from harness.kernels.catalogue import host_mirrors
from harness.errors import HarnessError
try:
    m = host_mirrors()
except HarnessError as e:
    sys.exit(f"host-check: error: {e}")
print(m.main)
print(m.security)
EOF
) || exit 2
MAIN=$(printf '%s\n' "$mirrors" | sed -n 1p)
SECURITY=$(printf '%s\n' "$mirrors" | sed -n 2p)
KEY=$(printf '%s\n' "$SUITE" $PKGS "$MAIN" "$SECURITY" | sha256sum | cut -c1-16)

mounts_under() {
	# Mount points at or below $1 (the mountinfo's 5th field, octal escapes kept).
	local real
	real=$(realpath -m "$1")
	awk -v p="$real" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo
}

remove_tree() {
	local m
	m=$(mounts_under "$1" | head -n1)
	# rm -rf through a bind mount of /dev would delete the host's nodes.
	[ -z "$m" ] || die "$1 has mounts ($m); unmount them (umount -R $1) and retry"
	rm -rf "$1"
}

make_root() {
	if [ -f "$MARKER" ] && grep -q "\"key\": \"$KEY\"" "$MARKER"; then
		say "reusing the $SUITE root $ROOT (key $KEY)"
		return
	fi
	mkdir -p "$CACHE"
	[ -e "$ROOT" ] && { say "removing the old $SUITE root (package list or archive changed)"; remove_tree "$ROOT"; }
	local tmp="$CACHE/.$SUITE.tmp.$$" start=$SECONDS
	for old in "$CACHE"/."$SUITE".tmp.*; do [ -e "$old" ] && remove_tree "$old"; done
	say "making the $SUITE root with mmdebstrap (takes a few minutes, about 1 GB)"
	# A private mount namespace: mmdebstrap mounts /proc, /sys, /dev in the
	# target, and a killed run must not leave them on the host.
	if ! unshare --mount --propagation private --fork -- \
		mmdebstrap --mode=root --variant=apt --format=directory \
		--include="$(echo $PKGS | tr ' ' ,)" \
		"$SUITE" "$tmp" \
		"deb [signed-by=$KEYRING] $MAIN $SUITE main" \
		"deb [signed-by=$KEYRING] $MAIN $SUITE-updates main" \
		"deb [signed-by=$KEYRING] $SECURITY $SUITE-security main"; then
		remove_tree "$tmp"
		die "mmdebstrap failed (see above)"
	fi
	printf '{"key": "%s", "suite": "%s", "made": "%s"}\n' "$KEY" "$SUITE" "$(date -u +%FT%TZ)" >"$tmp/.host-check.json"
	mv "$tmp" "$ROOT"
	say "root made in $((SECONDS - start)) s: $(du -sh "$ROOT" | cut -f1)"
}

# Runs "$@" chrooted in the root, in private mount and PID namespaces (every
# process in it dies with it, every mount vanishes with it), with /proc, /sys,
# /dev (with /dev/pts), a tmpfs /tmp and a clean environment.
in_root() {
	unshare --mount --propagation private --pid --fork --kill-child -- sh -c '
		set -e
		r="$1"; shift
		# The root must be a mount point: nested unshare --propagation needs one.
		mount --bind "$r" "$r"
		mount -t proc proc "$r/proc"
		mount -t sysfs sysfs "$r/sys"
		mount --rbind /dev "$r/dev"
		mount -t tmpfs tmpfs "$r/tmp"
		exec chroot "$r" "$@"' sh "$ROOT" \
		/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb CI=true DEBIAN_FRONTEND=noninteractive "$@"
}

make_root
[ "$root_only" = 1 ] && exit 0

stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOGS="$BUILD/$stamp"
mkdir -p "$LOGS"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
[ -s "$ROOT/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
# Certificate authorities this machine's admin added (a TLS-inspecting proxy's,
# say) are trusted in the root too, or pip cannot reach the package index.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
	mkdir -p "$ROOT/usr/local/share/ca-certificates"
	cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
	in_root update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
fi

commit=$(git rev-parse HEAD)
say "cloning the committed HEAD ${commit:0:12} (not the working tree) into the root"
remove_tree "$ROOT/work/project"
mkdir -p "$ROOT/work"
git clone -q --no-hardlinks --no-checkout "$PROJECT" "$ROOT/work/project"
git -C "$ROOT/work/project" checkout -q --detach "$commit"

versions=$(in_root sh -c 'echo "$(. /etc/os-release; echo "$PRETTY_NAME"), $(python3 --version), \
$(qemu-system-x86_64 --version | head -n1), gcc $(gcc -dumpfullversion), kmod $(kmod --version | head -n1 | tr -dc 0-9.)"')
say "root: $versions"

# step NAME COMMAND: runs COMMAND in the root's clone, output streamed and
# logged to $LOGS/NAME.log; records status and wall time.
declare -A rc wall
step() {
	local name=$1 start=$SECONDS
	shift
	say "[$name] $* (log: $LOGS/$name.log)"
	set +e
	in_root sh -c "cd /work/project && $*" 2>&1 | tee "$LOGS/$name.log"
	rc[$name]=${PIPESTATUS[0]}
	set -e
	wall[$name]=$((SECONDS - start))
	say "[$name] exit ${rc[$name]} after ${wall[$name]} s"
}

step apt-update "apt-get update -q"
step test "make test"
step race "make race"

dur() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }
{
	echo "host-check $stamp: commit ${commit:0:12} in $versions"
	for name in apt-update test race; do
		echo "== $name: exit ${rc[$name]}, wall $(dur "${wall[$name]}")"
		case $name in
			test) tail -n 3 "$LOGS/$name.log" ;;
			race) tail -n 25 "$LOGS/$name.log" ;;
		esac
	done
} | tee "$LOGS/summary.txt"
say "logs and summary in $LOGS"
for name in apt-update test race; do
	[ "${rc[$name]}" = 0 ] || exit 1
done
