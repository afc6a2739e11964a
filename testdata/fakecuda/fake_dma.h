/*
 * fake_dma.h - what both stand-ins (fake_cuda.c, fake_cufile.c) do around
 * the work a GPU's DMA engines and allocator would do.
 */
#ifndef FAKE_DMA_H
#define FAKE_DMA_H

/* Under ThreadSanitizer (the CPU launcher's race runs, -tags megaio_tsan)
 * the bytes this stand-in moves, and its device memory's allocation and
 * release, stand for DMA and the GPU's allocator, which no CPU thread does:
 * the sanitizer is told not to see them, as it sees no real DMA. Weak: with
 * no sanitizer runtime in the process these are null and nothing is done. */
extern void __tsan_ignore_thread_begin(void) __attribute__((weak));
extern void __tsan_ignore_thread_end(void) __attribute__((weak));
static void dma_begin(void)
{
	if (__tsan_ignore_thread_begin)
		__tsan_ignore_thread_begin();
}
static void dma_end(void)
{
	if (__tsan_ignore_thread_end)
		__tsan_ignore_thread_end();
}

#endif
