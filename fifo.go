package megaio

import "math/bits"

// fifo is a fixed ring: of record indices (the loop's pending records,
// the device engine's queues) or of claimed requests (l.waiting).
type fifo[T any] struct {
	buf        []T
	head, tail uint64
}

func newFIFO[T any](n int) fifo[T] { return fifo[T]{buf: make([]T, ceilPow2(uint32(n)))} }

func (f *fifo[T]) len() int { return int(f.tail - f.head) }

func (f *fifo[T]) full() bool { return f.len() == len(f.buf) }

func (f *fifo[T]) push(v T) { f.buf[f.tail&uint64(len(f.buf)-1)] = v; f.tail++ }

func (f *fifo[T]) pop() (v T) { v = f.peek(); f.head++; return v }

func (f *fifo[T]) peek() T { return f.buf[f.head&uint64(len(f.buf)-1)] }

func (f *fifo[T]) at(k int) *T { return &f.buf[(f.head+uint64(k))&uint64(len(f.buf)-1)] }

// ceilPow2 rounds n up to a power of two (n >= 1).
func ceilPow2(n uint32) uint32 {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len32(n-1)
}
