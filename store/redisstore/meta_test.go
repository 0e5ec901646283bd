package redisstore

import (
	"slices"
	"strings"
	"testing"
)

// TestLexRange checks the ZRANGEBYLEX bounds of MetaList's prefixes against
// a plain prefix test over keys around the edges (0xff bytes).
func TestLexRange(t *testing.T) {
	t.Parallel()
	keys := []string{"a", "a\x00", "a\x01", "ab", "a\xff", "a\xff\xff", "a\xffb", "b", "\xff", "\xff\xff", "\xff\xffa", "token/", "token/a", "token0", "tokem"}
	slices.Sort(keys)
	for _, prefix := range []string{"", "a", "a\xff", "\xff", "\xff\xff", "token/", "z"} {
		lo, hi := lexRange(prefix)
		var got, want []string
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				want = append(want, k)
			}
			if lexAbove(k, lo) && lexBelow(k, hi) {
				got = append(got, k)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("lexRange(%q) = %q, %q: selects %q, want %q", prefix, lo, hi, got, want)
		}
	}
}

// lexAbove and lexBelow evaluate ZRANGEBYLEX bounds the way Redis does.
func lexAbove(k, lo string) bool {
	switch {
	case lo == "-":
		return true
	case lo[0] == '[':
		return k >= lo[1:]
	default:
		return k > lo[1:]
	}
}

func lexBelow(k, hi string) bool {
	switch {
	case hi == "+":
		return true
	case hi[0] == '[':
		return k <= hi[1:]
	default:
		return k < hi[1:]
	}
}
