package kiln_test

import (
	"testing"

	"github.com/kilnhq/kiln"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
)

// The stores the client and worker tests of package kiln run on (see
// kiln.TestStores): set here because only an external test package may
// import kilntest, which imports kiln.
func init() {
	kiln.TestStores = []kiln.TestStore{
		{Name: "embedded", Open: func(t *testing.T, clock store.Clock) store.Store {
			t.Helper()
			return kilntest.Embedded(t, &kilntest.StoreOptions{Clock: clock})
		}},
		{Name: "redis", Open: func(t *testing.T, clock store.Clock) store.Store {
			t.Helper()
			return kilntest.Redis(t, &kilntest.StoreOptions{Clock: clock})
		}},
		{Name: "remote", Open: func(t *testing.T, clock store.Clock) store.Store {
			t.Helper()
			// "insp" and "other": the namespaces of inspector_test.go.
			return kilntest.StartServer(t, &kilntest.ServerOptions{Clock: clock, Bare: true, Projects: []string{"insp", "other"}}).Remote(t)
		}},
	}
}
