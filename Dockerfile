# megaio in a CUDA container: Go, the CUDA toolkit and cuFile, liburing,
# the module built; the default command is the test suite.
#
#   docker build -t megaio .
#   docker run --rm --gpus all --ulimit memlock=-1 --shm-size=1g -v /run/udev:/run/udev:ro \
#       --security-opt seccomp=deploy/seccomp-io_uring.json megaio
#
# The base is a build argument. By default NVIDIA's CUDA image (Ubuntu
# 24.04, CUDA 12.6, cuFile from NVIDIA's repository, which the image
# configures). Where no registry is reachable, a Debian 12 base made
# locally serves (scripts/container-check.sh makes one with debootstrap
# from the machine's own Debian mirror): CUDA comes from Debian's non-free
# nvidia-cuda-toolkit and libcufile-dev then (scripts/install-cuda-toolkit.sh):
#
#   podman build --build-arg BASE=localhost/megaio-base:bookworm -t megaio .
#
# Nothing here needs the open internet: packages come from the base's own
# package mirrors, Go from the Go module proxy (the golang.org/toolchain
# module, the same zip the go command fetches to switch toolchains),
# checked against its SHA-256 below.
#
# Run options:
# --shm-size=1g: the demo and the tests put files on /dev/shm, and the
#   engines' default of 64 MiB is too small for the demo's 128 MiB file.
# --ulimit memlock=-1: io_uring registered buffers and cuMemHostRegister pin
#   memory beyond the engines' default locked-memory limit (64 KiB for
#   Docker, 8 MiB for podman).
# -v /run/udev:/run/udev:ro: cuFile reads the host's udev database to map
#   NVMe devices to PCIe paths (GDS needs it; without it cuFile runs in
#   compatibility mode at best). GDS also needs the host's nvidia-fs
#   devices passed in (--device /dev/nvidia-fs0 ...); without them megaio
#   serves device memory through its bounce path.
# --security-opt seccomp=deploy/seccomp-io_uring.json: the engines' default
#   seccomp profile plus io_uring_setup, io_uring_enter and
#   io_uring_register. Under the default profile io_uring is refused: the
#   pool backend serves (and says why), and the io_uring tests skip with the
#   reason. Building the image runs under the default profile.
ARG BASE=nvidia/cuda:12.6.3-devel-ubuntu24.04
FROM ${BASE}

RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl unzip gcc g++ libc6-dev liburing-dev pkg-config fio git python3 \
    && rm -rf /var/lib/apt/lists/*
# EXTRA_CA_CERTS: PEM certificates to trust besides the base's, for a build
# whose HTTPS goes through an inspecting proxy with its own authority
# (scripts/container-check.sh passes the host's locally added ones, from
# /usr/local/share/ca-certificates). Empty by default.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/extra-build-ca.crt && update-ca-certificates; \
    fi
# CUDA and cuFile: NVIDIA's image has the toolkit and gets cuFile from
# NVIDIA's repository; a Debian base gets both from Debian's non-free
# component. (libcufile-dev: the cufile.h that build.sh checks our
# declarations against; cuFile itself is loaded at run time.)
COPY scripts/install-cuda-toolkit.sh /tmp/
RUN if [ -x /usr/local/cuda/bin/nvcc ]; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libcufile-dev-12-6; \
    else \
        /tmp/install-cuda-toolkit.sh; \
    fi && rm -rf /var/lib/apt/lists/* /tmp/install-cuda-toolkit.sh

# Go: GO_VERSION, the release this team builds and tests with; go.mod names
# the oldest Go that builds megaio (TestVersionsAgree keeps GO_VERSION at or
# above it). GO_SHA256 is the module zip's for linux-amd64 (another
# architecture: pass its own). A module zip keeps no file modes: the
# commands are made executable, as the go command does for a toolchain it
# fetches. GOTOOLCHAIN=local makes a mismatch an error instead of a
# download.
ARG GO_VERSION=1.26.8
ARG GO_SHA256=30c2b1bf7dcc88d3eb0a1364e47ddd9128edb3110a30e8a0ef61cd5856b31de7
RUN set -e; arch="$(dpkg --print-architecture)"; v="v0.0.1-go${GO_VERSION}.linux-${arch}"; \
    curl -fsSL -o /tmp/go.zip "https://proxy.golang.org/golang.org/toolchain/@v/${v}.zip"; \
    echo "${GO_SHA256}  /tmp/go.zip" | sha256sum -c -; \
    unzip -q /tmp/go.zip -d /tmp/go; mv "/tmp/go/golang.org/toolchain@${v}" /usr/local/go; \
    chmod -R a+rX /usr/local/go; chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*; \
    rm -rf /tmp/go /tmp/go.zip; /usr/local/go/bin/go version
ENV PATH=/usr/local/go/bin:/usr/local/cuda/bin:$PATH CGO_ENABLED=1 GOTOOLCHAIN=local \
    LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH}
WORKDIR /src
COPY go.mod go.sum ./
COPY cmd/go.mod cmd/go.sum cmd/
RUN go mod download && cd cmd && go mod download
COPY . .
# What `./build.sh test` would otherwise fetch at run time, fetched now so
# that a run needs no network: the container runtimes' default seccomp
# profile, which TestSeccompProfile compares deploy/seccomp-io_uring.json
# with (from golang-github-containers-common, extracted, not installed),
# and the oldest Go that go.mod names, which build.sh vets both modules with
# (kept in the module cache).
RUN mkdir -p build /tmp/profile && cd /tmp/profile && apt-get update \
    && apt-get download golang-github-containers-common \
    && dpkg-deb -x golang-github-containers-common_*.deb x \
    && cp x/usr/share/containers/seccomp.json /src/build/runtime-seccomp.json \
    && cd / && rm -rf /tmp/profile /var/lib/apt/lists/* \
    && GOTOOLCHAIN="go$(sed -n 's/^go //p' /src/go.mod)" go version
# bin/megaio and the examples; the tests run with the container.
RUN ./build.sh && go vet ./... && go test -c -o /dev/null . && cd cmd && go vet ./...

CMD ["./build.sh", "test"]
