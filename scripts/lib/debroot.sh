#!/bin/bash
# Debian roots for the host checks: made with mmdebstrap from the archive the
# host's apt names, kept in the cache under a key of what they are made of, and
# commands run chrooted in them in private mount and PID namespaces.
# Sourced by scripts/host-check.sh; nightlycheck/ (make nightly-check) runs it:
#
#   scripts/lib/debroot.sh make ROOT SUITE VARIANT [PKG...]   make (or reuse) ROOT
#   scripts/lib/debroot.sh run ROOT [VAR=VALUE...] CMD...     CMD chrooted in ROOT
#   scripts/lib/debroot.sh remove TREE                        rm -rf, refused over mounts
#
# Needs root (mmdebstrap --mode=root, mount, chroot) and the project's .venv.

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

say() { echo "${DEBROOT_WHO:-debroot}: $*" >&2; }
die() { echo "${DEBROOT_WHO:-debroot}: error: $*" >&2; exit 2; }

debroot_require() {
	[ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, mount, chroot); run it with sudo"
	local tool
	for tool in mmdebstrap unshare chroot git; do
		command -v "$tool" >/dev/null || die "$tool is missing; run: apt-get install -y mmdebstrap util-linux git"
	done
	[ -x .venv/bin/python ] || die ".venv/bin/python is missing; run: make setup"
}

# The archive the host's apt sources name, read exactly as the harness reads it:
# sets MAIN and SECURITY.
debroot_mirrors() {
	local mirrors
	mirrors=$(.venv/bin/python - <<'PYEOF'
import sys
from harness.kernels.apt import host_mirrors
from harness.errors import HarnessError
try:
    m = host_mirrors()
except HarnessError as e:
    sys.exit(f"error: {e}")
print(m.main)
print(m.security)
PYEOF
) || die "cannot read the host's apt sources"
	MAIN=$(printf '%s\n' "$mirrors" | sed -n 1p)
	SECURITY=$(printf '%s\n' "$mirrors" | sed -n 2p)
}

mounts_under() {
	# Mount points at or below $1 (the mountinfo's 5th field, octal escapes kept).
	local real
	real=$(realpath -m "$1")
	awk -v p="$real" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo
}

debroot_remove() {
	local m
	m=$(mounts_under "$1" | head -n1)
	# rm -rf through a bind mount of /dev would delete the host's nodes.
	[ -z "$m" ] || die "$1 has mounts ($m); unmount them (umount -R $1) and retry"
	rm -rf "$1"
}

# debroot_make ROOT SUITE VARIANT PKG...: a SUITE root at ROOT, reused while
# its key (suite, variant, packages, archive) is the same.
debroot_make() {
	local root=$1 suite=$2 variant=$3
	shift 3
	local pkgs="$*" marker key
	debroot_mirrors
	key=$(printf '%s\n' "$suite" "$variant" $pkgs "$MAIN" "$SECURITY" | sha256sum | cut -c1-16)
	marker="$root/.debroot.json"
	if [ -f "$marker" ] && grep -q "\"key\": \"$key\"" "$marker"; then
		say "reusing the $suite root $root (key $key)"
		return
	fi
	mkdir -p "$(dirname "$root")"
	[ -e "$root" ] && { say "removing the old $suite root (package list or archive changed)"; debroot_remove "$root"; }
	local tmp="$root.tmp.$$" start=$SECONDS old
	for old in "$root".tmp.*; do [ -e "$old" ] && debroot_remove "$old"; done
	say "making the $suite root ($variant) with mmdebstrap (takes a few minutes)"
	local include=()
	[ -n "$pkgs" ] && include=(--include="$(echo $pkgs | tr ' ' ,)")
	# A private mount namespace: mmdebstrap mounts /proc, /sys, /dev in the
	# target, and a killed run must not leave them on the host.
	if ! unshare --mount --propagation private --fork -- \
		mmdebstrap --mode=root --variant="$variant" --format=directory "${include[@]}" \
		"$suite" "$tmp" \
		"deb [signed-by=$KEYRING] $MAIN $suite main" \
		"deb [signed-by=$KEYRING] $MAIN $suite-updates main" \
		"deb [signed-by=$KEYRING] $SECURITY $suite-security main"; then
		debroot_remove "$tmp"
		die "mmdebstrap failed (see above)"
	fi
	printf '{"key": "%s", "suite": "%s", "variant": "%s", "made": "%s"}\n' \
		"$key" "$suite" "$variant" "$(date -u +%FT%TZ)" >"$tmp/.debroot.json"
	mv "$tmp" "$root"
	say "root made in $((SECONDS - start)) s: $(du -sh "$root" | cut -f1)"
}

# debroot_prepare ROOT: name resolution, and the certificate authorities this
# machine's admin added (a TLS-inspecting proxy's, say), or pip cannot reach the
# package index from the root.
debroot_prepare() {
	local root=$1
	cp -L /etc/resolv.conf "$root/etc/resolv.conf"
	[ -s "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$root/etc/hosts"
	if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
		# A root without ca-certificates (minbase) gets the host's bundle;
		# installing the package later makes it again from the copied ones.
		if [ ! -s "$root/etc/ssl/certs/ca-certificates.crt" ]; then
			mkdir -p "$root/etc/ssl/certs"
			cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
		fi
		mkdir -p "$root/usr/local/share/ca-certificates"
		cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
		if [ -x "$root/usr/sbin/update-ca-certificates" ]; then
			debroot_run "$root" update-ca-certificates >/dev/null 2>&1 ||
				die "update-ca-certificates failed in the root"
		fi
	fi
}

# debroot_run ROOT [VAR=VALUE...] CMD...: CMD chrooted in ROOT, in private mount
# and PID namespaces (every process in it dies with it, every mount vanishes
# with it), with /proc, /sys, /dev (with /dev/pts), a tmpfs /tmp and a clean
# environment.
debroot_run() {
	local root=$1
	shift
	unshare --mount --propagation private --pid --fork --kill-child -- sh -c '
		set -e
		r="$1"; shift
		# The root must be a mount point: nested unshare --propagation needs one.
		mount --bind "$r" "$r"
		mount -t proc proc "$r/proc"
		mount -t sysfs sysfs "$r/sys"
		mount --rbind /dev "$r/dev"
		mount -t tmpfs tmpfs "$r/tmp"
		exec chroot "$r" "$@"' sh "$root" \
		/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 TERM=dumb CI=true DEBIAN_FRONTEND=noninteractive "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -euo pipefail
	cd "$(dirname "$0")/../.."
	cmd=${1:-}
	shift || true
	case $cmd in
		make) [ $# -ge 3 ] || die "usage: debroot.sh make ROOT SUITE VARIANT [PKG...]"
			debroot_require; debroot_make "$@"; debroot_prepare "$1" ;;
		run) [ $# -ge 2 ] || die "usage: debroot.sh run ROOT [VAR=VALUE...] CMD..."
			debroot_require; debroot_run "$@" ;;
		remove) [ $# = 1 ] || die "usage: debroot.sh remove TREE"
			debroot_remove "$1" ;;
		*) die "usage: debroot.sh make|run|remove ..." ;;
	esac
fi
