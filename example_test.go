package megaio_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/megaio/megaio"
)

// Example reads the first bytes of a file through the queue, with a Go host
// producer standing in for a GPU thread.
func Example() {
	f, err := os.CreateTemp("", "megaio-example-*")
	if err != nil {
		log.Fatal(err)
	}
	defer os.Remove(f.Name())
	f.WriteString("hello from megaio")

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
