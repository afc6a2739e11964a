package main

import "testing"

// TestDemo runs a small demo: it fails unless every byte is verified.
func TestDemo(t *testing.T) {
	for _, c := range []demoConfig{
		{requests: 3000, producers: 3, depth: 4, block: 4096, size: 1 << 20, dir: t.TempDir()},
		{requests: 1001, producers: 2, depth: 1, block: 1000, size: 100000, dir: defaultDir()},
	} {
		if err := demo(c); err != nil {
			t.Errorf("demo(%+v): %v", c, err)
		}
	}
}
