//go:build linux && !cgo

package runner

// cTrampoline is false where the trampoline runs in Go (Main), in a build
// without cgo.
const cTrampoline = false
