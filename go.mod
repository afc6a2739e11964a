module github.com/megaio/megaio

go 1.22.0

require (
	github.com/google/go-cmp v0.7.0
	github.com/hanwen/go-fuse/v2 v2.12.1
	golang.org/x/sys v0.30.0
)
