#!/usr/bin/env bash
# A consumer's view of the library: a fresh module that imports megaio
# (pointed at this checkout) must build, and its module graph must hold
# none of the commands' dependencies (the plotting stack: gonum/plot and its
# font, LaTeX, PDF and image modules). Test-only requirements of the
# library (go-cmp, go-fuse) may appear, as they do for any Go module.
# Built without cgo, the same program must compile and its constructors must
# fail with ErrCgoRequired instead of a link or compile error.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/go.mod" <<EOM
module example.com/consumer

go $(sed -n 's/^go //p' "$root/go.mod")

require github.com/megaio/megaio v0.7.0

replace github.com/megaio/megaio => $root
EOM
cat >"$dir/main.go" <<'EOM'
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/megaio/megaio"
)

func main() {
	fmt.Println(megaio.Version)
	if len(os.Args) > 1 && os.Args[1] == "nocgo" {
		q, err := megaio.NewQueue(megaio.QueueConfig{})
		if err != nil {
			panic(err)
		}
		_, lerr := megaio.NewLoop(q, megaio.Config{})
		_, cerr := megaio.NewClient(megaio.ClientConfig{})
		_, gerr := megaio.OpenGPU(0)
		for _, err := range []error{lerr, cerr, gerr} {
			if !errors.Is(err, megaio.ErrCgoRequired) {
				fmt.Println("want ErrCgoRequired, got:", err)
				os.Exit(1)
			}
		}
		fmt.Println(lerr)
	}
}
EOM
cd "$dir"
go mod tidy >/dev/null 2>&1 || go mod tidy
CGO_ENABLED=1 go build -o consumer .
graph="$(go list -m all)"
bad="$(grep -E 'gonum|go-fonts|go-latex|go-pdf|sbinet|svgo|freetype|x/image' <<<"$graph" || true)"
if [ -n "$bad" ]; then
	echo "consumer-check: a program importing megaio gets the commands' dependencies:" >&2
	echo "$bad" >&2
	exit 1
fi
CGO_ENABLED=0 go build -o consumer-nocgo .
if ! out="$(./consumer-nocgo nocgo)"; then
	echo "consumer-check: built without cgo, the constructors did not fail with ErrCgoRequired: $out" >&2
	exit 1
fi
echo "consumer-check: PASS: $(wc -l <<<"$graph") modules in a consumer's graph, none of the plotting stack;" \
	"without cgo it builds and says: $(tail -1 <<<"$out")"
