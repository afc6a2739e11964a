package megaio_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/megaio/megaio"
)

// Example reads the first bytes of a file through the queue, with a Go host
// producer standing in for a GPU thread.
func Example() {
	name := exampleFile("hello from megaio")
	defer os.Remove(name)
	f, err := os.Open(name)
	if err != nil {
		log.Fatal(err)
	}

	q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 64})
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	l, err := megaio.NewLoop(q, megaio.Config{})
	if err != nil {
		log.Fatal(err) // errors.Is(err, megaio.ErrIOUringUnavailable) where io_uring is refused
	}
	defer l.Close()
	fh, err := l.RegisterFile(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	buf, err := l.NewBuffer(4096, megaio.BufferOptions{})
	if err != nil {
		log.Fatal(err)
	}
	dh, err := l.AddDestination(buf, 0, 4096)
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Start(); err != nil {
		log.Fatal(err)
	}

	p, err := q.HostProducer()
	if err != nil {
		log.Fatal(err)
	}
	res, err := p.Do(megaio.Request{Op: megaio.OpRead, File: fh, Dest: dh, Length: 100})
	if err != nil || res.Err() != nil {
		log.Fatal(err, res.Err())
	}
	fmt.Printf("%d bytes: %s\n", res, buf.Bytes()[:res])

	// A READ past the destination fails its own slot with -EFAULT.
	res, _ = p.Do(megaio.Request{Op: megaio.OpRead, File: fh, Dest: dh, DestOffset: 4000, Length: 200})
	fmt.Println(res.Err())

	if err := l.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 17 bytes: hello from megaio
	// bad address
}

// ExampleLoop_AddQueue serves two queues from one loop, as one per GPU
// would be: each has its own producers and completions; the file and the
// destination are the loop's, shared by both.
func ExampleLoop_AddQueue() {
	name := exampleFile("one loop, two queues")
	defer os.Remove(name)
	f, err := os.Open(name)
	if err != nil {
		log.Fatal(err)
	}

	l, err := megaio.NewLoop(nil, megaio.Config{}) // no queue yet
	if err != nil {
		log.Fatal(err)
	}
	var producers []*megaio.HostProducer
	for range 2 {
		q, err := megaio.NewQueue(megaio.QueueConfig{Capacity: 64})
		if err != nil {
			log.Fatal(err)
		}
		defer q.Close() // after l.Close (deferred calls run last first)
		if err := l.AddQueue(q); err != nil {
			log.Fatal(err)
		}
		p, err := q.HostProducer()
		if err != nil {
			log.Fatal(err)
		}
		producers = append(producers, p)
	}
	defer l.Close()
	fh, err := l.RegisterFile(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	buf, err := l.NewBuffer(4096, megaio.BufferOptions{})
	if err != nil {
		log.Fatal(err)
	}
	dh, err := l.AddDestination(buf, 0, 4096)
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Start(); err != nil {
		log.Fatal(err)
	}
	for k, r := range []struct{ off, n uint64 }{{0, 8}, {10, 10}} { // "one loop", "two queues"
		dest := uint64(k) * 1024
		res, err := producers[k].Do(megaio.Request{Op: megaio.OpRead, File: fh, Dest: dh, FileOffset: r.off,
			DestOffset: dest, Length: r.n})
		if err != nil || res.Err() != nil {
			log.Fatal(err, res.Err())
		}
		fmt.Printf("queue %d: %s\n", k, buf.Bytes()[dest:dest+uint64(res)])
	}
	if err := l.Stop(context.Background()); err != nil {
		log.Fatal(err)
	}
	for k, s := range l.Stats().Queues {
		fmt.Printf("queue %d completed %d\n", k, s.Completed)
	}
	// Output:
	// queue 0: one loop
	// queue 1: two queues
	// queue 0 completed 1
	// queue 1 completed 1
}

// ExampleClient reads a file the short way: ReadAt into any slice, as
// io.ReaderAt does.
func ExampleClient() {
	name := exampleFile("hello from the short path")
	defer os.Remove(name)

	c, err := megaio.NewClient(megaio.ClientConfig{})
	if err != nil {
		log.Fatal(err) // errors.Is(err, megaio.ErrIOUringUnavailable) where io_uring is refused and Backend is io_uring
	}
	defer c.Close(context.Background())
	f, err := c.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		log.Fatal(err)
	}
	p := make([]byte, 64)
	n, err := f.ReadAt(p, 11)
	fmt.Printf("%d bytes, %v: %s\n", n, err, p[:n])
	// Output:
	// 14 bytes, EOF: the short path
}

// ExampleFile_ReadAtAsync reads into a registered buffer with no copy; the
// request is split into TaskSize pieces that run in parallel, and Wait
// takes a context.
func ExampleFile_ReadAtAsync() {
	name := exampleFile(strings.Repeat("0123456789abcdef", 1<<14)) // 256 KiB
	defer os.Remove(name)

	c, err := megaio.NewClient(megaio.ClientConfig{TaskSize: 64 << 10})
	if err != nil {
		log.Fatal(err)
	}
	buf, err := c.NewBuffer(256 << 10)
	if err != nil {
		log.Fatal(err)
	}
	f, err := c.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		log.Fatal(err)
	}
	fut := f.ReadAtAsync(buf.Bytes(), 0) // four 64 KiB pieces in flight at once
	// Wait, like Close below, waits until its context ends: give it a
	// deadline to bound it.
	ctx := context.Background()
	n, err := fut.Wait(ctx)
	fmt.Println(n, err, string(buf.Bytes()[n-6:n]))

	// Close waits for requests still in flight until its context ends.
	if err := c.Close(ctx); err != nil {
		log.Fatal(err)
	}
	// Output:
	// 262144 <nil> abcdef
}

// exampleFile writes s to a new temporary file and returns its name.
func exampleFile(s string) string {
	f, err := os.CreateTemp("", "megaio-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		log.Fatal(err)
	}
	return f.Name()
}

// ExampleFile_WriteAt writes through a Client and reads the bytes back with
// ReadAt.
func ExampleFile_WriteAt() {
	name := exampleFile("")
	defer os.Remove(name)

	c, err := megaio.NewClient(megaio.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())
	f, err := c.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written by megaio"), 0); err != nil {
		log.Fatal(err)
	}
	p := make([]byte, 7)
	n, err := f.ReadAt(p, 11)
	fmt.Println(n, err, string(p[:n]))
	// Output:
	// 6 EOF megaio
}

// ExampleNewClient_environment: settings an operator gives in the
// environment fill what the program leaves unset.
func ExampleNewClient_environment() {
	os.Setenv("MEGAIO_BACKEND", "pool") // as if set by the operator
	defer os.Unsetenv("MEGAIO_BACKEND")

	c, err := megaio.NewClient(megaio.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close(context.Background())
	fmt.Println(c.Loop().Backend().Kind)

	os.Setenv("MEGAIO_TASK_SIZE", "lots")
	defer os.Unsetenv("MEGAIO_TASK_SIZE")
	_, err = megaio.NewClient(megaio.ClientConfig{})
	fmt.Println(errors.Is(err, megaio.ErrConfig), err)
	// Output:
	// pool
	// true megaio: bad configuration: MEGAIO_TASK_SIZE="lots": size "lots": want a byte count such as 4096, 4KiB, 1MiB or 2GiB
}
