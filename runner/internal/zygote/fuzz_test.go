//go:build linux && cgo

package zygote

import (
	"strings"
	"testing"
)

// The helper's parser refuses what the runner would never send, without
// crashing, and takes back every request Encode makes.
func FuzzParseRequest(f *testing.F) {
	good, err := (&Request{UID: 1900000001, GID: 1900000001, Groups: []uint32{5}, Limits: [6]int64{1, 2, 3, -1, 5, -1},
		TaskDir: "/var/lib/kiln/runner/t", Path: "/bin/sh", Argv: []string{"sh", "-c", "true"}, Env: []string{"A=b"},
		HideDirs: []string{"/var/lib/kiln"}, HideFiles: []string{"/etc/kiln.json"}, Private: []string{"/tmp"}}).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "sh", "A=b")
	f.Add([]byte("kiln-sandbox-1\x00"), "", "")
	f.Add([]byte{}, "x", "")
	f.Add(good[:len(good)-1], "a\x00b", "")
	f.Fuzz(func(t *testing.T, raw []byte, arg, env string) {
		_ = parse(raw) // must not crash; any answer
		req := &Request{UID: -1, Limits: [6]int64{-1, -1, -1, -1, -1, -1}, TaskDir: "/t", Path: "/p",
			Argv: []string{"p", arg}, Env: []string{env}, HideDirs: []string{"/h"}, Private: []string{"/tmp"}}
		b, err := req.Encode()
		if strings.IndexByte(arg, 0) >= 0 || strings.IndexByte(env, 0) >= 0 {
			if err == nil {
				t.Fatalf("Encode took a NUL byte: %q %q", arg, env)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := parse(b); err != nil {
			t.Fatalf("the helper refuses Encode's request (%q, %q): %v", arg, env, err)
		}
		if err := parse(append(b, 'x')); err == nil {
			t.Fatal("the helper took trailing bytes")
		}
	})
}
