// Command megaio runs megaio's demo: host producers stand in for GPU threads
// and read a file through the queue and the loop, verifying every byte.
//
//	megaio demo [-requests N] [-producers P] [-depth D] [-block B] [-size S] [-dir DIR] [-direct] [-backend B] [-deny-io-uring]
//	megaio soak [-duration D] [-cycle D] [-producers P] [-backend B] [-seed S]
//	megaio bench [-rw RW] [-block B] [-depth D] [-batch N] [-direct] [-dir DIR] [-json F] [-plot F]
//	megaio check [-for host|gpu|gds] [-json]
//	megaio version (or -version, --version)
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/megaio/megaio"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "-h", "-help", "--help", "help":
		usage(os.Stdout) // asked for: not an error
		return
	case "version", "-version", "--version":
		printVersion(os.Stdout)
	case "check":
		err = runCheck(os.Args[2:])
	case "demo":
		err = runDemo(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:])
	case "soak":
		err = runSoak(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "megaio: unknown command %q\n\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		msg := err.Error()
		if !strings.HasPrefix(msg, "megaio") { // the library's errors (and flag sets') name it already
			msg = "megaio: " + msg
		}
		fmt.Fprintln(os.Stderr, msg)
		if errors.As(err, new(usageError)) {
			os.Exit(2) // the command line itself is wrong, as for an unknown flag
		}
		os.Exit(1)
	}
}

// usageError is a command line that cannot be run as written: a stray
// argument, a flag value out of range. The command exits 2, as the flag
// package does for an unknown flag; 1 is for a run that failed.
type usageError struct{ error }

func usageErrorf(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "megaio %s (queue ABI version %d)\n", megaio.Version, megaio.ABIVersion)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: megaio <command> [flags]

commands:
  demo     serve random READs from host producers through the loop and verify every byte
  bench    megaio against fio and plain Go on one file, side by side, with a table, JSON and a plot
  soak     many producers, a random mix of requests, Stop/Start cycles; every READ verified, lost must be 0
  check    what this machine offers megaio (io_uring, memlock, huge pages, seccomp, CUDA, cuFile), with fixes
  version  the release and the queue ABI version (also -version, --version)
  help     this text

Run 'megaio <command> -h' for the flags.`)
}

func newFlagSet(name string) *flag.FlagSet {
	return flag.NewFlagSet("megaio "+name, flag.ExitOnError) // -h exits 0, a bad flag 2
}

// parseFlags parses args and refuses positional arguments: every command
// takes flags only, and a stray word is a mistake to report, not to ignore.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.Parse(args)
	if fs.NArg() > 0 {
		return usageErrorf("%s: unexpected argument %q (flags only; -h lists them)", fs.Name(), fs.Arg(0))
	}
	return nil
}
