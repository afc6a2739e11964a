# cuda-env.sh - sourced by cuda-checks.sh and the GPU bundle's run.sh: finds
# the CUDA toolkit and cuFile wherever they are installed. Each function
# prints its answer (empty when nothing is found) and never fails.
#
#   nvcc:    $NVCC, $CUDA_HOME/bin, PATH, /usr/local/cuda/bin
#   cuda.h:  $CUDA_HOME/include, next to nvcc, /usr/local/cuda/include,
#            /usr/include (Debian's nvidia-cuda-toolkit)
#   cuFile:  $CUFILE_HOME; $CUDA_HOME (lib64, targets/<arch>-linux); the
#            nvidia-cufile Python wheel, nvidia/cu13/{include,lib} (CUDA 13
#            wheels) or nvidia/cufile/{include,lib} (CUDA 12 wheels), found
#            through python3's nvidia package path (PYTHONPATH included) and
#            site-packages; /usr/local/cuda; Debian's libcufile-dev.
# cuFile needs both cufile.h and libcufile.so.0 in one installation.

megaio_find_nvcc() {
	local c
	for c in "${NVCC:-}" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc 2>/dev/null)" /usr/local/cuda/bin/nvcc; do
		[ -n "$c" ] && [ -x "$c" ] && { echo "$c"; return; }
	done
}

megaio_find_cuda_include() {
	local d nvcc bin
	nvcc="$(megaio_find_nvcc)"
	bin="${nvcc%/*}"
	for d in "${CUDA_HOME:+$CUDA_HOME/include}" "${nvcc:+${bin%/*}/include}" \
		/usr/local/cuda/include /usr/include; do
		[ -n "$d" ] && [ -f "$d/cuda.h" ] && { echo "$d"; return; }
	done
}

# megaio_cufile_candidates prints "include-dir lib-dir" pairs, best first:
# what the caller named ($CUFILE_HOME, $CUDA_HOME), the wheels (what
# PyTorch loads), the toolkit in /usr/local/cuda, Debian's packages.
megaio_cufile_candidates() {
	local h t py
	[ -n "${CUFILE_HOME:-}" ] && echo "$CUFILE_HOME/include $CUFILE_HOME/lib" && echo "$CUFILE_HOME/include $CUFILE_HOME/lib64"
	megaio_toolkit_cufile "${CUDA_HOME:-}"
	# The wheels: the nvidia namespace package's directories (PYTHONPATH,
	# user and system site-packages), then site-packages directly.
	for py in python3 python; do
		command -v "$py" >/dev/null 2>&1 || continue
		"$py" - <<-'EOF' 2>/dev/null
			import site, sys
			dirs = []
			try:
			    import nvidia
			    dirs += list(nvidia.__path__)
			except Exception:
			    pass
			try:
			    dirs += [p + "/nvidia" for p in site.getsitepackages() + [site.getusersitepackages()]]
			except Exception:
			    pass
			for d in dirs:
			    for sub in ("cu13", "cufile", "cu12"):
			        print(f"{d}/{sub}/include {d}/{sub}/lib")
		EOF
		break
	done
	megaio_toolkit_cufile /usr/local/cuda
	echo "/usr/include /usr/lib/$(uname -m)-linux-gnu"
}

# megaio_toolkit_cufile HOME prints a CUDA toolkit's cuFile places: lib64,
# and targets/<arch>-linux/{include,lib}.
megaio_toolkit_cufile() {
	local t
	[ -n "$1" ] || return 0
	echo "$1/include $1/lib64"
	for t in "$1"/targets/*-linux; do
		[ -d "$t" ] && echo "$t/include $t/lib"
	done
	return 0
}

# megaio_find_cufile prints "include-dir lib-dir" of the first installation
# with both cufile.h and libcufile.so.0.
megaio_find_cufile() {
	local inc lib
	while read -r inc lib; do
		[ -f "$inc/cufile.h" ] && [ -e "$lib/libcufile.so.0" ] && { echo "$inc $lib"; return; }
	done < <(megaio_cufile_candidates)
}

# megaio_find_cufile_header prints the first directory with cufile.h, with or
# without the library (enough for the declaration checks).
megaio_find_cufile_header() {
	local inc lib
	while read -r inc lib; do
		[ -f "$inc/cufile.h" ] && { echo "$inc"; return; }
	done < <(megaio_cufile_candidates)
}

# megaio_gpu_archs NVCC prints the architectures to build for, as numbers:
# every sm_70-or-newer one that this nvcc compiles offline (CUDA 13 lists
# sm_75 and up, older ones sm_70 and up), or $MEGAIO_CUDA_ARCHS.
megaio_gpu_archs() {
	if [ -n "${MEGAIO_CUDA_ARCHS:-}" ]; then
		echo "$MEGAIO_CUDA_ARCHS"
		return
	fi
	"$1" --list-gpu-arch 2>/dev/null | sed -n 's/^compute_\([0-9]*\)$/\1/p' | awk '$1 >= 70' | sort -n | tr '\n' ' ' | sed 's/ $//'
}
