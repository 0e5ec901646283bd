package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/store"
)

// AuthorizeToken checks that tok (an admin token, or a project token of
// project) may use project's tasks, and that the project exists. It is for
// the other APIs mounted beside this one (the IronWorker API), which take
// tokens in their own way. Its error is a catalogue error: unauthorized,
// not_found (also for another project's token: no existence oracle), or a
// store failure. Session keys are refused: they may only lease.
func (a *API) AuthorizeToken(ctx context.Context, tok, project string) error {
	if tok == "" || strings.HasPrefix(tok, SessionKeyPrefix) || strings.ContainsAny(tok, " \t\r\n") {
		return wire.Errorf(wire.CodeUnauthorized, "unknown or revoked token")
	}
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return err
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	who, err := a.authenticate(r)
	if err != nil {
		return err
	}
	if err := store.CheckName("project", project); err != nil {
		return notFoundProject(project)
	}
	if !who.admin && who.project != project {
		return notFoundProject(project)
	}
	_, err = a.project(ctx, project, false)
	return err
}
