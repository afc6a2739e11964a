#!/usr/bin/env bash
# container-check.sh - build megaio's container image (the Dockerfile) with
# a real container engine and run it: the demo and the test suite, under the
# engine's default seccomp profile (io_uring refused: the pool serves and
# says why, the io_uring tests skip with the reason) and under
# deploy/seccomp-io_uring.json (io_uring serves, its tests run). Then the
# run options the Dockerfile's comments give, checked: without
# --shm-size the demo's file does not fit /dev/shm. Run by `./build.sh
# test` (MEGAIO_NO_CONTAINER_CHECK=1 skips it).
#
#   scripts/container-check.sh          podman; a Debian 12 base made here
#   BASE=nvidia/cuda:12.6.3-devel-ubuntu24.04 scripts/container-check.sh
#                                       NVIDIA's image (needs its registry)
#
# Podman from Debian's packages, run as root with runc (crun refuses a
# hybrid cgroup layout) and modest default ulimits (a root without
# CAP_SYS_RESOURCE cannot raise nofile to podman's default), both set in
# build/container/containers.conf. The base, when none is given, is made
# with debootstrap from the machine's own Debian mirror and imported
# (cached in the engine's image store between runs). Without root it skips,
# saying why; ./build.sh test (MEGAIO_REQUIRE_CONTAINER=1) makes that a
# failure. Logs go to build/container/.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "container-check: $*"; }
if [ "$(id -u)" -ne 0 ]; then
	say "SKIPPED: podman needs root here (rootless podman needs subuid ranges this script does not set up)"
	[ -z "${MEGAIO_REQUIRE_CONTAINER:-}" ] || exit 1
	exit 0
fi
start=$SECONDS
dir=build/container
mkdir -p "$dir"

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >"$dir/install.log" 2>&1 ||
		{ cat "$dir/install.log"; exit 1; }
fi
cat >"$dir/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$PWD/$dir/containers.conf"

base="${BASE:-localhost/megaio-base:bookworm}"
if [ -z "${BASE:-}" ] && ! podman image exists "$base"; then
	mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
	say "making the Debian 12 base with debootstrap from $mirror"
	rm -rf "$dir/rootfs"
	debootstrap --variant=minbase bookworm "$dir/rootfs" "$mirror" >"$dir/debootstrap.log" 2>&1 ||
		{ tail -20 "$dir/debootstrap.log"; exit 1; }
	rm -rf "$dir/rootfs/var/cache/apt/archives/"*.deb "$dir/rootfs/var/lib/apt/lists/"*
	tar -C "$dir/rootfs" -c . | podman import - "$base" >"$dir/import.log" 2>&1 || { cat "$dir/import.log"; exit 1; }
	rm -rf "$dir/rootfs"
fi

# An inspecting proxy's authority, where the host trusts one it added
# itself, goes into the build too (Dockerfile: EXTRA_CA_CERTS).
extra_ca=""
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
	extra_ca="$(cat /usr/local/share/ca-certificates/*.crt)"
fi
say "building the image on $base"
t0=$SECONDS
if ! podman build --network host --build-arg BASE="$base" --build-arg EXTRA_CA_CERTS="$extra_ca" \
	-t megaio:check . >"$dir/build.log" 2>&1; then
	tail -30 "$dir/build.log"
	say "FAIL: the image did not build (see $dir/build.log)"
	exit 1
fi
say "PASS image built in $((SECONDS - t0)) s ($(podman image inspect megaio:check --format '{{.Size}}' | awk '{printf "%.1f GB", $1/1e9}'))"

# The run options of the Dockerfile's comments. The engine here cannot
# raise RLIMIT_MEMLOCK (its root lacks CAP_SYS_RESOURCE), so locked memory
# is allowed by --cap-add IPC_LOCK, the other way the comments give;
# --pids-limit=-1: the CPU launcher runs a thread per CUDA thread.
run=(podman run --rm --cap-add IPC_LOCK --pids-limit=-1 --shm-size=1g)
iouring=(--security-opt "seccomp=$PWD/deploy/seccomp-io_uring.json")
failed=0
check() { # check NAME LOG WANT... : every WANT (a grep -E pattern) is in LOG
	local name=$1 log=$2
	shift 2
	for want in "$@"; do
		if ! grep -qE -- "$want" "$log"; then
			say "FAIL $name: no '$want' in $log"
			failed=1
			return
		fi
	done
	say "PASS $name"
}

"${run[@]}" megaio:check ./bin/megaio demo >"$dir/demo-default.log" 2>&1 || true
check "demo, default seccomp profile (the pool serves, and says why)" "$dir/demo-default.log" \
	'^backend: pool' 'io_uring refused' '^PASS: every byte verified'
"${run[@]}" "${iouring[@]}" megaio:check ./bin/megaio demo >"$dir/demo-io_uring.log" 2>&1 || true
check "demo, deploy/seccomp-io_uring.json (io_uring serves)" "$dir/demo-io_uring.log" \
	'^backend: io_uring' '^PASS: every byte verified'
"${run[@]}" megaio:check ./bin/example-checksum -target cpu >"$dir/example.log" 2>&1 || true
check "the persistent-kernel example on CPU threads" "$dir/example.log" "every block's sum equals the host's"
podman run --rm --cap-add IPC_LOCK megaio:check ./bin/megaio demo >"$dir/demo-small-shm.log" 2>&1 || true
check "without --shm-size the demo's 128 MiB file does not fit /dev/shm (the Dockerfile's reason for it)" \
	"$dir/demo-small-shm.log" 'no space left on device'

for profile in default io_uring; do
	opts=()
	[ "$profile" = io_uring ] && opts=("${iouring[@]}")
	t0=$SECONDS
	"${run[@]}" "${opts[@]}" megaio:check go test -count=1 -v ./... >"$dir/test-$profile.log" 2>&1 || true
	if grep -qE '^(FAIL|--- FAIL|panic:)' "$dir/test-$profile.log"; then
		grep -E '^(FAIL|--- FAIL|panic:)' "$dir/test-$profile.log" | head -10
		say "FAIL the test suite, $profile seccomp profile (see $dir/test-$profile.log)"
		failed=1
	elif [ "$profile" = default ]; then
		check "the test suite, default profile ($((SECONDS - t0)) s; the io_uring tests skip with the reason)" \
			"$dir/test-$profile.log" '^ok[[:space:]]+github.com/megaio/megaio[[:space:]]' 'skipping: io_uring is refused here'
	else
		check "the test suite, deploy/seccomp-io_uring.json ($((SECONDS - t0)) s)" "$dir/test-$profile.log" \
			'^ok[[:space:]]+github.com/megaio/megaio[[:space:]]'
		if grep -q 'skipping: io_uring is refused here' "$dir/test-$profile.log"; then
			say "FAIL an io_uring test skipped under deploy/seccomp-io_uring.json"
			failed=1
		fi
	fi
done

# The shipped profile is the engine's own default plus io_uring and nothing
# more: TestSeccompProfile, against the default profile podman installed
# (/usr/share/containers/seccomp.json), not a copy.
if MEGAIO_REQUIRE_RUNTIME_PROFILE=1 PATH="$PATH:/usr/local/go/bin" go test -count=1 -v -run '^TestSeccompProfile$' . \
	>"$dir/profile.log" 2>&1; then
	check "deploy/seccomp-io_uring.json is podman's default profile plus io_uring" "$dir/profile.log" \
		'/usr/share/containers/seccomp.json' '^--- PASS: TestSeccompProfile'
else
	tail -20 "$dir/profile.log"
	say "FAIL TestSeccompProfile against podman's default profile"
	failed=1
fi

say "took $((SECONDS - start)) s"
[ $failed -eq 0 ] && say "all passed" || { say "FAILED"; exit 1; }
