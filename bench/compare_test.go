package main

import (
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{5.2}, 5.2},
		{[]float64{6.3, 4.9, 5.2}, 5.2},
		{[]float64{7.0, 4.5, 5.5, 6.5}, 6.0},
	} {
		in := slices.Clone(c.in)
		if got := median(in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !slices.Equal(in, c.in) {
			t.Errorf("median reordered its input: %v, was %v", in, c.in)
		}
	}
	if got, want := formatRatios([]float64{6.25, 4.94}), "6.2x, 4.9x"; got != want {
		t.Errorf("formatRatios = %q, want %q", got, want)
	}
}
