package kiln

import (
	"testing"

	"github.com/kilnhq/kiln/internal/wire"
)

// TestSentinelsReexported: every store sentinel of the HTTP error catalogue
// is re-exported by package kiln, so that a user compares a remote store's
// errors with kiln's names alone.
func TestSentinelsReexported(t *testing.T) {
	t.Parallel()
	exported := map[error]bool{
		ErrNotFound: true, ErrLeaseLost: true, ErrDuplicate: true, ErrTaskExists: true,
		ErrInvalidState: true, ErrInvalidName: true, ErrInvalidOption: true,
		ErrPayloadTooLarge: true, ErrClosed: true, ErrUnavailable: true, ErrStorageFull: true,
	}
	for _, c := range wire.Codes {
		if c.Sentinel != nil && !exported[c.Sentinel] {
			t.Errorf("the sentinel of code %s (%v) is not re-exported by package kiln (errors.go)", c.Code, c.Sentinel)
		}
	}
}
