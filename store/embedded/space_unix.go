//go:build unix

package embedded

import (
	"errors"
	"syscall"
)

// isQuotaError reports whether err means the user's disk quota is used up.
func isQuotaError(err error) bool { return errors.Is(err, syscall.EDQUOT) }
