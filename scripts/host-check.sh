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
PKGS="python3 python3-venv qemu-system-x86 gcc gcc-12 make git kmod binutils zstd xz-utils squashfs-tools apt-utils
mmdebstrap debian-archive-keyring ca-certificates util-linux mount procps"
CACHE="${HARNESS_CACHE:-$PROJECT/.cache}/host-check"
BUILD="${HARNESS_BUILD:-$PROJECT/build}/host-check"
ROOT="$CACHE/$SUITE"

DEBROOT_WHO=host-check
# shellcheck source=scripts/lib/debroot.sh
. scripts/lib/debroot.sh

root_only=0
case "${1:-}" in
	"") ;;
	--root-only) root_only=1 ;;
	*) die "unknown argument ${1}; usage: scripts/host-check.sh [--root-only]" ;;
esac

debroot_require
in_root() { debroot_run "$ROOT" "$@"; }

debroot_make "$ROOT" "$SUITE" apt $PKGS
[ "$root_only" = 1 ] && exit 0

stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOGS="$BUILD/$stamp"
mkdir -p "$LOGS"
debroot_prepare "$ROOT"

commit=$(git rev-parse HEAD)
say "cloning the committed HEAD ${commit:0:12} (not the working tree) into the root"
debroot_remove "$ROOT/work/project"
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
