#!/usr/bin/env bash
# install-cuda-toolkit.sh - install a CUDA compiler and headers on a Debian
# machine that has none, so that build.sh can compile every kernel and check
# our declarations against the real cuda.h and cufile.h.
#
# Debian ships the CUDA toolkit in its non-free component
# (nvidia-cuda-toolkit: nvcc, ptxas, cuobjdump, cuda.h; libcufile-dev:
# cufile.h). Most machines list only "main", so this script adds a sources
# entry for contrib and non-free on the mirror the machine's own Debian entry
# already uses (read from /etc/apt; nothing here names a host), then
# installs both packages without their recommends (about 1.6 GB, 1-2
# minutes).
#
# Does nothing where nvcc and cuda.h are already found (CUDA_HOME,
# /usr/local/cuda or /usr). Exits 0 without installing, saying why, on a
# machine that is not Debian or lists no Debian mirror; build.sh then
# reports the CUDA checks as not run.
set -euo pipefail

have_toolkit() {
	local d
	for d in "${CUDA_HOME:-}" /usr/local/cuda /usr; do
		[ -n "$d" ] && [ -x "$d/bin/nvcc" ] && [ -f "$d/include/cuda.h" ] && return 0
	done
	return 1
}
if have_toolkit; then
	exit 0
fi

# shellcheck disable=SC1091
. /etc/os-release
if [ "${ID:-}" != debian ]; then
	echo "install-cuda-toolkit.sh: not Debian (${ID:-unknown}); install the CUDA toolkit yourself" >&2
	exit 0
fi
codename="${VERSION_CODENAME:?}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The mirror: the first URI of an entry serving "$codename" (not -security)
# in either sources format.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
	[ -f "$f" ] || continue
	mirror=$(awk -v cn="$codename" '
		/^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
		/^URIs:/ { uri = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == cn) ok = 1 }
		END { if (uri != "" && ok) print uri }' "$f" | head -n1)
	[ -n "$mirror" ] && keyring=$(awk '/^Signed-By:/ { print $2; exit }' "$f") && break
done
if [ -z "$mirror" ]; then
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		mirror=$(awk -v cn="$codename" '$1 == "deb" {
			i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i + 1) == cn) { print $i; exit } }' "$f")
		[ -n "$mirror" ] && break
	done
fi
if [ -z "$mirror" ]; then
	echo "install-cuda-toolkit.sh: no Debian $codename entry found under /etc/apt; not installing" >&2
	exit 0
fi

list=/etc/apt/sources.list.d/megaio-cuda-nonfree.sources
{
	echo "Types: deb"
	echo "URIs: $mirror"
	echo "Suites: $codename $codename-updates"
	echo "Components: contrib non-free"
	if [ -n "${keyring:-}" ]; then # (an && list here would fail the pipeline where there is none)
		echo "Signed-By: $keyring"
	fi
} | $sudo tee "$list" >/dev/null
echo "install-cuda-toolkit.sh: added contrib non-free for $codename ($list); installing nvidia-cuda-toolkit libcufile-dev"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
	nvidia-cuda-toolkit libcufile-dev >/dev/null
have_toolkit || { echo "install-cuda-toolkit.sh: installed, but nvcc or cuda.h is still missing" >&2; exit 1; }
echo "install-cuda-toolkit.sh: $(nvcc --version | tail -n1)"
