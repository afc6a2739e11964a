# megaio in a CUDA container: Ubuntu 24.04 (its liburing-dev, 2.5, is newer
# than Debian 12's), Go, the module built and its tests run.
#
#   docker build -t megaio .
#   docker run --rm --gpus all --ulimit memlock=-1 --shm-size=1g -v /run/udev:/run/udev:ro \
#       --security-opt seccomp=deploy/seccomp-io_uring.json megaio
#
# --shm-size: the demo and the tests put files on /dev/shm, and Docker's
# default 64 MiB is too small for the demo's 128 MiB file (ENOSPC).
#
# --ulimit memlock=-1: io_uring registered buffers and cuMemHostRegister pin
# memory beyond Docker's default 64 KiB locked-memory limit. /run/udev:
# cuFile reads the host's udev database to map NVMe devices to PCIe paths
# (GDS needs it; without it cuFile runs in compatibility mode at best).
#
# The run's default command is the test suite, GPU tests included (they
# skip, saying why, without --gpus). Without the seccomp option Docker's
# default profile refuses io_uring: the pool backend's tests still run and
# the io_uring ones skip with the reason. `docker build` itself runs under
# the default profile, so the build step tests what it can.
FROM nvidia/cuda:12.6.3-devel-ubuntu24.04

# Go: GO_VERSION, the release this team builds and tests with; go.mod names
# the oldest Go that builds megaio (TestVersionsAgree keeps GO_VERSION at or
# above it). GOTOOLCHAIN=local makes a mismatch an error instead of a
# download.
# libcufile-dev-12-6 (NVIDIA's repository, configured in this image): cuFile
# for GPUDirect Storage, loaded at run time, and the cufile.h that build.sh
# checks our declarations against. GDS itself also needs the host's
# nvidia-fs devices passed in (--device /dev/nvidia-fs0 ...); without them
# megaio serves device memory through its bounce path.
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl gcc g++ libc6-dev liburing-dev pkg-config fio git python3 libcufile-dev-12-6 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
COPY cmd/go.mod cmd/go.sum cmd/
ARG GO_VERSION=1.26.8
RUN curl -fsSL "https://go.dev/dl/go${GO_VERSION}.linux-$(dpkg --print-architecture).tar.gz" | tar -C /usr/local -xz
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=1 GOTOOLCHAIN=local LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH}
RUN go mod download && cd cmd && go mod download
COPY . .
# What `./build.sh test` would otherwise fetch at run time, fetched now so
# that `docker run` needs no network: the container runtimes' default
# seccomp profile, which TestSeccompProfile compares
# deploy/seccomp-io_uring.json with (from golang-github-containers-common,
# extracted, not installed), and the oldest Go that go.mod names, which
# build.sh vets both modules with (kept in the module cache).
RUN mkdir -p build /tmp/profile && cd /tmp/profile && apt-get update \
    && apt-get download golang-github-containers-common \
    && dpkg-deb -x golang-github-containers-common_*.deb x \
    && cp x/usr/share/containers/seccomp.json /src/build/runtime-seccomp.json \
    && cd / && rm -rf /tmp/profile /var/lib/apt/lists/* \
    && GOTOOLCHAIN="go$(sed -n 's/^go //p' /src/go.mod)" go version
# Builds bin/megaio, runs scripts/cuda-checks.sh (csrc/cuda_shim.h and
# csrc/cufile_shim.h against this image's cuda.h and cufile.h, every kernel
# compiled for sm_70 to sm_90 with warnings as errors, the scope check), and
# runs the tests that need neither a GPU nor io_uring.
RUN ./build.sh && go vet ./... && go test -count=1 ./... && cd cmd && go vet ./... && go test -count=1 ./...

CMD ["./build.sh", "test"]
