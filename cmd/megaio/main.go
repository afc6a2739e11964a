// Command megaio runs megaio's demo: host producers stand in for GPU threads
// and read a file through the queue and the loop, verifying every byte.
//
//	megaio demo [-requests N] [-producers P] [-depth D] [-block B] [-size S] [-dir DIR] [-direct] [-backend B] [-deny-io-uring]
//	megaio soak [-duration D] [-cycle D] [-producers P] [-backend B] [-seed S]
//	megaio bench -compare [-rw RW] [-block B] [-depth D] [-batch N] [-direct] [-dir DIR] [-json F] [-plot F]
//	megaio version
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/megaio/megaio"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "version":
		printVersion(os.Stdout)
	case "demo":
		err = runDemo(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:])
	case "soak":
		err = runSoak(os.Args[2:])
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "megaio:", err)
		os.Exit(1)
	}
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "megaio %s (queue ABI version %d)\n", megaio.Version, megaio.ABIVersion)
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: megaio <command> [flags]

commands:
  demo   serve random READs from host producers through the loop and verify every byte
  bench  -compare: megaio against fio and plain Go on one file, side by side, with a table, JSON and a plot
  soak   many producers, a random mix of requests, Stop/Start cycles; every READ verified, lost must be 0
  version  print the release and the queue ABI version

Run 'megaio <command> -h' for the flags.`)
}

func newFlagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet("megaio "+name, flag.ExitOnError)
}
