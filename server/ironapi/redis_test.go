package ironapi_test

import (
	"net/http"
	"testing"

	"github.com/kilnhq/kiln/kilntest"
)

// TestTwoServersOnRedis: a package uploaded to a server without a runner,
// on one Redis connection, is run by another server's runner on another
// connection to the same Redis; status and log are read back through the
// first.
func TestTwoServersOnRedis(t *testing.T) {
	t.Parallel()
	u := kilntest.RedisURL(t)
	prefix := kilntest.RedisPrefix(t, u)
	front := setupOn(t, kilntest.RedisAt(t, u, prefix, nil), false)
	setupOn(t, kilntest.RedisAt(t, u, prefix, nil), true)

	front.mustUpload(map[string]any{"name": "seed", "file_name": "__runner__.sh", "runtime": "sh"}, seedZip(t))
	ids := front.queue(map[string]any{"code_name": "seed", "payload": `{"n":1}`})
	if ti := front.wait(ids[0]); ti.Status != "complete" {
		t.Fatalf("task: %+v", ti)
	}
	if log := front.log(ids[0]); log != "Hello, playground\nmap[n:1]\n" {
		t.Errorf("log = %q", log)
	}
	var code struct {
		Codes []struct {
			ID string `json:"id"`
		} `json:"codes"`
	}
	front.json(http.MethodGet, "/2/projects/"+project+"/codes", nil, &code)
	front.json(http.MethodDelete, "/2/projects/"+project+"/codes/"+code.Codes[0].ID, nil, nil)
}
