//go:build !linux || !cgo

package zygote

// Supported reports whether this build has the helper: it needs cgo on
// Linux.
const Supported = false

// arg0 is unused without the helper.
const arg0 = "kiln-sandbox-helper"
