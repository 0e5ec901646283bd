package api

import (
	"context"
	"strings"

	"github.com/kilnhq/kiln/internal/wire"
)

// Identify tells who a token is: an admin token (admin true, project
// empty) or a project token (its project). An unknown or revoked token,
// and a worker session key, are unauthorized; a store failure is returned
// as it is. The dashboard signs in with it.
func (a *API) Identify(ctx context.Context, tok string) (admin bool, project string, err error) {
	if tok == "" || strings.HasPrefix(tok, SessionKeyPrefix) || strings.ContainsAny(tok, " \t\r\n") {
		return false, "", wire.Errorf(wire.CodeUnauthorized, "unknown or revoked token")
	}
	var t tokenRecord
	found, err := a.getRecord(ctx, SystemNamespace, keyToken+hashSecret(tok), &t)
	if err != nil {
		return false, "", err
	}
	if !found {
		return false, "", wire.Errorf(wire.CodeUnauthorized, "unknown or revoked token")
	}
	return t.Admin, t.Project, nil
}
