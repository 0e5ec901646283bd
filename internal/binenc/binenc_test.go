package binenc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errTest = errors.New("test: corrupt")

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 12, 0, 0, 5, time.UTC)
	var b []byte
	b = AppendString(b, "héllo")
	b = AppendBytes(b, []byte{1, 2})
	b = AppendNilBytes(b, nil)
	b = AppendNilBytes(b, []byte{})
	b = AppendTime(b, at)
	b = AppendTime(b, time.Time{})
	b = AppendTime(b, time.Unix(0, 0))
	b = append(b, 7)
	r := NewReader(b, errTest)
	if got := r.String(100); got != "héllo" {
		t.Errorf("String = %q", got)
	}
	if got := r.Bytes(100); !bytes.Equal(got, []byte{1, 2}) {
		t.Errorf("Bytes = %v", got)
	}
	if got := r.NilBytes(100); got != nil {
		t.Errorf("NilBytes of nil = %v, want nil", got)
	}
	if got := r.NilBytes(100); got == nil || len(got) != 0 {
		t.Errorf("NilBytes of empty = %v, want empty and not nil", got)
	}
	if got := r.Time(); !got.Equal(at) {
		t.Errorf("Time = %v, want %v", got, at)
	}
	if got := r.Time(); !got.IsZero() {
		t.Errorf("zero Time = %v", got)
	}
	if got := r.Time(); !got.Equal(time.Unix(0, 0)) || got.IsZero() {
		t.Errorf("epoch Time = %v", got)
	}
	if err := r.End(); !errors.Is(err, errTest) {
		t.Errorf("End with a byte left = %v, want the sentinel", err)
	}
	if r.Byte() != 7 || r.End() != nil {
		t.Errorf("last byte or End wrong: %v", r.Err())
	}
}

func TestFailures(t *testing.T) {
	t.Parallel()
	cases := map[string]func(*Reader){
		"truncated byte":   func(r *Reader) { r.Byte() },
		"length over cap":  func(r *Reader) { r.Raw(1) },
		"length over data": func(r *Reader) { r.Raw(1 << 20) },
		"int32 overflow":   func(r *Reader) { r.Int32() },
	}
	inputs := map[string][]byte{
		"truncated byte":   {},
		"length over cap":  AppendString(nil, "ab"),
		"length over data": {5, 'a'},
		"int32 overflow":   {0xff, 0xff, 0xff, 0xff, 0x7f},
	}
	for name, read := range cases {
		r := NewReader(inputs[name], errTest)
		read(r)
		if !errors.Is(r.Err(), errTest) {
			t.Errorf("%s: Err = %v, want the sentinel", name, r.Err())
		}
		// After a failure every read is a zero value.
		if r.Byte() != 0 || r.Uvarint() != 0 || r.String(10) != "" {
			t.Errorf("%s: reads after a failure are not zero", name)
		}
	}
}

// TestLens: the Len functions give what the Append functions write, at
// every varint boundary and for negative values.
func TestLens(t *testing.T) {
	t.Parallel()
	var us []uint64
	for shift := range 64 {
		v := uint64(1) << shift
		us = append(us, v-1, v, v+1)
	}
	us = append(us, math.MaxUint64)
	for _, u := range us {
		if got, want := UvarintLen(u), len(binary.AppendUvarint(nil, u)); got != want {
			t.Errorf("UvarintLen(%d) = %d, want %d", u, got, want)
		}
		for _, v := range []int64{int64(u), -int64(u)} {
			if got, want := VarintLen(v), len(binary.AppendVarint(nil, v)); got != want {
				t.Errorf("VarintLen(%d) = %d, want %d", v, got, want)
			}
		}
	}
	for _, v := range []int64{math.MinInt64, math.MaxInt64} {
		if got, want := VarintLen(v), len(binary.AppendVarint(nil, v)); got != want {
			t.Errorf("VarintLen(%d) = %d, want %d", v, got, want)
		}
	}
	for _, s := range []string{"", "a", strings.Repeat("x", 127), strings.Repeat("x", 128), strings.Repeat("x", 20000)} {
		if got, want := StringLen(s), len(AppendString(nil, s)); got != want {
			t.Errorf("StringLen of %d bytes = %d, want %d", len(s), got, want)
		}
	}
	for _, at := range []time.Time{{}, time.Unix(0, 0), time.Unix(0, -1), time.Date(1678, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 23, 12, 0, 0, 5, time.UTC)} {
		if got, want := TimeLen(at), len(AppendTime(nil, at)); got != want {
			t.Errorf("TimeLen(%v) = %d, want %d", at, got, want)
		}
	}
}
