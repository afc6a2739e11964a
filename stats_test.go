package megaio

import (
	"reflect"
	"testing"
)

// TestCounterLayout: a counters struct is all uint64 words (so the loop
// publishes it word by word), and each word shows in Stats exactly once:
// with that word alone set to 1, the counts in Stats sum to 1. A counter
// added to a struct but left out of its stats method, or shown twice,
// fails here.
func TestCounterLayout(t *testing.T) {
	checkCounters(t, func() ([]uint64, func() any) {
		c := new(counters)
		return counterWords(c), func() any { return c.stats() }
	})
	checkCounters(t, func() ([]uint64, func() any) {
		c := new(queueCounters)
		return counterWords(c), func() any { return c.stats() }
	})
}

// checkCounters sets each word of a fresh counters struct to 1 in turn.
func checkCounters(t *testing.T, fresh func() ([]uint64, func() any)) {
	t.Helper()
	words, _ := fresh()
	for i := range words {
		words, stats := fresh()
		words[i] = 1
		s := stats()
		if got := sumCounts(reflect.ValueOf(s)); got != 1 {
			t.Errorf("%T: word %d of %d shows %d times, want once", s, i, len(words), got)
		}
	}
}

func TestCounterTypesAreWords(t *testing.T) {
	for _, typ := range []reflect.Type{reflect.TypeOf(counters{}), reflect.TypeOf(queueCounters{})} {
		if !onlyWords(typ) {
			t.Errorf("%v holds something other than uint64 words", typ)
		}
	}
	if n := len(counterWords(new(counters))); uintptr(n*8) != reflect.TypeOf(counters{}).Size() {
		t.Errorf("counterWords sees %d words of counters", n)
	}
}

// onlyWords reports whether typ is made of uint64 words only.
func onlyWords(typ reflect.Type) bool {
	switch typ.Kind() {
	case reflect.Uint64:
		return true
	case reflect.Array:
		return onlyWords(typ.Elem())
	case reflect.Struct:
		for i := range typ.NumField() {
			if !onlyWords(typ.Field(i).Type) {
				return false
			}
		}
		return true
	}
	return false
}

// sumCounts adds up every uint64 in v (fields, arrays, map values), except
// the derived QueueStats.InFlight.
func sumCounts(v reflect.Value) uint64 {
	var n uint64
	switch v.Kind() {
	case reflect.Uint64:
		n = v.Uint()
	case reflect.Array, reflect.Slice:
		for i := range v.Len() {
			n += sumCounts(v.Index(i))
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			n += sumCounts(it.Value())
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).Name != "InFlight" {
				n += sumCounts(v.Field(i))
			}
		}
	}
	return n
}
