package ironapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/testenv"
	"github.com/kilnhq/kiln/kilntest"
	"github.com/kilnhq/kiln/store"
)

// Cancelling a schedule that has made all its runs answers as IronWorker
// does, with success, and leaves the schedule complete; cancelling it twice
// succeeds as well.
func TestCancelFinishedSchedule(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	b := setupOn(t, st, false)
	b.mustUpload(map[string]any{"name": "once", "file_name": "run.sh", "runtime": "sh"},
		testenv.Zip(t, map[string][]byte{"run.sh": []byte("true\n")}))
	pp := "/2/projects/" + project
	var created struct {
		Schedules []struct {
			ID string `json:"id"`
		} `json:"schedules"`
	}
	b.json(http.MethodPost, pp+"/schedules", map[string]any{"schedules": []map[string]any{
		{"code_name": "once", "payload": "", "run_times": 1},
	}}, &created)
	if len(created.Schedules) != 1 {
		t.Fatalf("create: %+v", created)
	}
	sid := created.Schedules[0].ID
	var si struct {
		Status   string `json:"status"`
		RunCount int    `json:"run_count"`
	}
	for deadline := time.Now().Add(time.Minute); si.Status != "complete"; {
		if time.Now().After(deadline) {
			t.Fatalf("the schedule did not complete its one run within a minute: %+v", si)
		}
		b.json(http.MethodGet, pp+"/schedules/"+sid, nil, &si)
		if si.Status != "complete" {
			<-time.After(20 * time.Millisecond)
		}
	}
	for range 2 {
		status, body := b.do(http.MethodPost, pp+"/schedules/"+sid+"/cancel", "application/json", nil)
		var msg struct {
			Msg string `json:"msg"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &msg) != nil || msg.Msg != "Cancelled" {
			t.Fatalf("cancel of a complete schedule: status %d, %s; want 200 {\"msg\":\"Cancelled\"}", status, body)
		}
	}
	b.json(http.MethodGet, pp+"/schedules/"+sid, nil, &si)
	if si.Status != "complete" || si.RunCount != 1 {
		t.Fatalf("schedule after cancel = %+v, want complete with 1 run", si)
	}
}

// The IronWorker door follows the rule of option defaults too: a package
// without "retries" gets IronWorker's default, none; "retries": 0 is none;
// "retries": 2 is two; for a queued task and for a scheduled one alike.
func TestPackageRetries(t *testing.T) {
	t.Parallel()
	st := kilntest.Embedded(t, nil)
	b := setupOn(t, st, false)
	zip := testenv.Zip(t, map[string][]byte{"run.sh": []byte("true\n")})
	pp := "/2/projects/" + project
	for _, c := range []struct {
		name    string
		retries any
		want    int
	}{{"r-absent", nil, 0}, {"r-zero", 0, 0}, {"r-two", 2, 2}} {
		pkg := map[string]any{"name": c.name, "file_name": "run.sh", "runtime": "sh"}
		if c.retries != nil {
			pkg["retries"] = c.retries
		}
		b.mustUpload(pkg, zip)
		ids := b.queue(map[string]any{"code_name": c.name, "payload": ""})
		var created struct {
			Schedules []struct {
				ID string `json:"id"`
			} `json:"schedules"`
		}
		b.json(http.MethodPost, pp+"/schedules", map[string]any{"schedules": []map[string]any{
			{"code_name": c.name, "payload": "", "run_times": 1},
		}}, &created)
		sid := created.Schedules[0].ID
		var tl struct {
			Tasks []struct {
				ID         string `json:"id"`
				ScheduleID string `json:"schedule_id"`
			} `json:"tasks"`
		}
		for deadline := time.Now().Add(time.Minute); ; {
			b.json(http.MethodGet, pp+"/tasks?code_name="+c.name, nil, &tl)
			if len(tl.Tasks) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the schedule made no task within a minute: %+v", c.name, tl)
			}
			<-time.After(20 * time.Millisecond)
		}
		for _, tk := range tl.Tasks {
			got, err := st.Get(t.Context(), store.GetParams{Namespace: project, IDs: []string{tk.ID}})
			if err != nil || got.Tasks[0] == nil {
				t.Fatalf("%s: Get %s: %v", c.name, tk.ID, err)
			}
			from := "queued"
			if tk.ScheduleID == sid {
				from = "scheduled"
			} else if tk.ID != ids[0] {
				t.Fatalf("%s: unexpected task %+v", c.name, tk)
			}
			if n := got.Tasks[0].MaxRetries; n != c.want {
				t.Errorf("%s: %s task has max retries %d, want %d", c.name, from, n, c.want)
			}
		}
	}
}
