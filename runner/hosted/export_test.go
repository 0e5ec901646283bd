package hosted

import (
	"context"
	"syscall"
)

// ProjectCredential exposes projectCredential to the tests.
func ProjectCredential(ctx context.Context, h *Hosted, project string) (*syscall.Credential, error) {
	return h.projectCredential(ctx, project)
}
