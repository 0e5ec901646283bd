package server_test

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/kilnhq/kiln/internal/tmpfs"
	"github.com/kilnhq/kiln/internal/wire"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/server"
	"github.com/kilnhq/kiln/store/embedded"
)

// TestFullDisk runs a server on an embedded store on a small disk (a
// tmpfs) and fills it: an enqueue fails with 507 storage_full, the server
// stays up (/healthz ok) and serves reads, /readyz answers 503 with the
// reason; once space is freed, enqueues work again without a restart.
func TestFullDisk(t *testing.T) { //nolint:paralleltest // it fills a 64 MiB tmpfs, which is memory: one at a time
	mnt := tmpfs.Mount(t, 64<<20)
	st, err := embedded.Open(filepath.Join(mnt, "data"), &embedded.Config{ReserveBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b := setup(t, func(c *server.Config) { c.Store = st })
	const p = "default"
	id := b.enqueue(p, adminToken, wire.TaskRequest{Type: "before"})
	enqueue := func() (int, *wire.Error) {
		status, body := b.do("POST", "/v1/projects/"+p+"/tasks", adminToken, wire.EnqueueRequest{Tasks: []wire.TaskRequest{{Type: "x"}}})
		var eb wire.ErrorBody
		_ = json.Unmarshal(body, &eb) // a 200 has no error object
		return status, eb.Error
	}

	tmpfs.Fill(t, mnt, "filler")
	kilntest.Eventually(t, "enqueues to fail once the disk filled up", func() bool {
		status, e := enqueue()
		if status == http.StatusInsufficientStorage {
			if e == nil || e.Code != wire.CodeStorageFull || e.Message != wire.StorageFullMessage {
				t.Fatalf("enqueue on a full disk: 507 with %+v, want code %s", e, wire.CodeStorageFull)
			}
			return true
		}
		if status != http.StatusOK {
			t.Fatalf("enqueue on a full disk: %d %+v, want 507 (or 200 until the store notices)", status, e)
		}
		return false
	})
	b.ok(http.StatusOK, "GET", "/healthz", "", nil, nil)
	var h wire.Health
	status, body := b.do("GET", "/readyz", adminToken, nil)
	if err := json.Unmarshal(body, &h); err != nil || status != http.StatusServiceUnavailable || h.Status != wire.CodeStorageFull {
		t.Fatalf("/readyz on a full disk: %d %s, want 503 status %s", status, body, wire.CodeStorageFull)
	}
	var task wire.Task
	b.ok(http.StatusOK, "GET", "/v1/projects/"+p+"/tasks/"+id, adminToken, nil, &task)
	if task.Type != "before" {
		t.Fatalf("GET task on a full disk: %+v", task)
	}
	b.ok(http.StatusOK, "GET", "/v1/projects/"+p+"/tasks", adminToken, nil, nil)
	b.ok(http.StatusOK, "GET", "/v1/stats", adminToken, nil, nil)

	tmpfs.Free(t, mnt, "filler")
	kilntest.Eventually(t, "an enqueue to work after space was freed", func() bool {
		status, e := enqueue()
		if status != http.StatusOK && status != http.StatusInsufficientStorage {
			t.Fatalf("enqueue after space was freed: %d %+v", status, e)
		}
		return status == http.StatusOK
	})
	b.ok(http.StatusOK, "GET", "/readyz", adminToken, nil, nil)
}
