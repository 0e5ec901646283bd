//go:build !linux

package zygote

import "os"

// Helper is unavailable off Linux.
type Helper struct{}

// Start fails off Linux.
func Start() (*Helper, error) { return nil, ErrUnsupported }

// Spawn fails off Linux.
func (h *Helper) Spawn(_ []byte, _, _, _ *os.File) (int, error) { return 0, ErrUnsupported }

// Pid is 0 off Linux.
func (h *Helper) Pid() int { return 0 }

// Alive is false off Linux.
func (h *Helper) Alive() bool { return false }

// Close does nothing off Linux.
func (h *Helper) Close() error { return nil }
