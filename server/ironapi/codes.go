package ironapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/blob"
	"github.com/kilnhq/kiln/runner"
	"github.com/kilnhq/kiln/runner/hosted"
	"github.com/kilnhq/kiln/store"
)

// codeData is the "data" field of an upload, as the clients send it.
// Unknown fields are ignored (IronWorker's own clients send fields kiln has
// no use for: host, stack, id).
type codeData struct {
	Name            *string           `json:"name"`
	Runtime         string            `json:"runtime"`
	FileName        string            `json:"file_name"`
	Command         string            `json:"command"`
	Stack           string            `json:"stack"`
	Image           string            `json:"image"`
	Config          *string           `json:"config"`
	EnvVars         map[string]string `json:"env_vars"`
	MaxConcurrency  *int              `json:"max_concurrency"`
	Retries         *int              `json:"retries"`
	RetriesDelay    *float64          `json:"retries_delay"`
	DefaultPriority *int              `json:"default_priority"`
}

// decodeJSON decodes exactly one JSON value from b into v; a field of the
// wrong type is named in the error.
func decodeJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return badRequest("Invalid JSON: field %q must be %s, not %s", te.Field, jsonKind(te.Type.String()), te.Value)
		}
		return badRequest("Invalid JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("Invalid JSON: more than one value")
	}
	return nil
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number"
	case strings.Contains(goType, "string") && strings.HasPrefix(goType, "map"):
		return "an object of strings"
	case strings.Contains(goType, "string"):
		return "a string"
	}
	return goType
}

// decodeCodeData decodes and checks an upload's data into a revision (its
// zip not yet described).
func decodeCodeData(b []byte) (hosted.Revision, error) {
	var d codeData
	if len(bytes.TrimSpace(b)) == 0 {
		return hosted.Revision{}, badRequest("the data field is empty: it must be a JSON object with at least \"name\"")
	}
	if err := decodeJSON(b, &d); err != nil {
		return hosted.Revision{}, err
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	rev := hosted.Revision{Runtime: d.Runtime, FileName: d.FileName, Command: d.Command, Stack: d.Stack, EnvVars: d.EnvVars}
	if d.Name == nil {
		bad("name is required")
	} else if err := hosted.CheckName(*d.Name); err != nil {
		bad("%v", err)
	} else {
		rev.Name = *d.Name
	}
	if d.Image != "" {
		bad("image: Docker images are not supported; upload a zip with file_name or command")
	}
	switch {
	case d.FileName == "" && strings.TrimSpace(d.Command) == "":
		bad("file_name (the program in the zip) or command is required")
	case d.FileName != "" && strings.TrimSpace(d.Command) != "":
		bad("give file_name or command, not both")
	case d.FileName != "":
		if strings.ContainsAny(d.FileName, "\\\x00") || !filepath.IsLocal(d.FileName) {
			bad("file_name %q is not a relative path inside the zip", trunc(d.FileName))
		}
	default:
		if strings.ContainsRune(d.Command, 0) {
			bad("command holds a NUL")
		}
	}
	if _, ok := runner.Runtimes()[d.Runtime]; !ok {
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range runner.Runtimes() {
				if k != "" && !yield(k) {
					return
				}
			}
		})
		bad("runtime %q is not supported (supported: %s)", trunc(d.Runtime), strings.Join(names, ", "))
	}
	if d.Config != nil {
		if len(*d.Config) > MaxPayloadBytes {
			bad("config is %d bytes, more than %d", len(*d.Config), MaxPayloadBytes)
		}
		rev.Config = *d.Config
	}
	if err := runner.ValidateEnv(d.EnvVars); err != nil {
		bad("env_vars: %v", err)
	}
	if d.MaxConcurrency != nil {
		if *d.MaxConcurrency < -1 || *d.MaxConcurrency > store.MaxBatch {
			bad("max_concurrency %d is outside 0..%d (-1: no cap)", *d.MaxConcurrency, store.MaxBatch)
		} else if *d.MaxConcurrency > 0 {
			rev.MaxConcurrency = *d.MaxConcurrency
		}
	}
	if d.Retries != nil {
		if *d.Retries < 0 || *d.Retries > MaxRetries {
			bad("retries %d is outside 0..%d", *d.Retries, MaxRetries)
		} else {
			rev.Retries = *d.Retries
		}
	}
	if d.RetriesDelay != nil {
		v := *d.RetriesDelay
		if math.IsNaN(v) || v < 0 || v > MaxRetriesDelay {
			bad("retries_delay %v is outside 0..%d seconds", v, MaxRetriesDelay)
		} else {
			rev.RetriesDelay = int(math.Ceil(v))
		}
	}
	if d.DefaultPriority != nil {
		if *d.DefaultPriority < 0 || *d.DefaultPriority > 2 {
			bad("default_priority %d is outside 0..2", *d.DefaultPriority)
		} else {
			rev.DefaultPriority = *d.DefaultPriority
		}
	}
	if len(errs) > 0 {
		return hosted.Revision{}, badRequest("Invalid data: %s", strings.Join(errs, "; "))
	}
	return rev, nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// uploadCode is POST /codes: multipart with "data" (JSON) and "file" (the
// zip), in either order, streamed; the zip goes to a temporary file under
// its cap (readUpload), is checked by unpacking it (checkZip), and only
// then stored.
func (a *API) uploadCode(c *call) error {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return badRequest("Content-Type must be multipart/form-data with a \"data\" field (JSON) and a \"file\" field (a zip)")
	}
	limit := a.cfg.MaxCodeBytes + maxDataBytes + 64<<10
	if err := checkLength(c, limit); err != nil {
		return err
	}
	c.r.Body = http.MaxBytesReader(c.w, c.r.Body, limit)
	mr, err := c.r.MultipartReader()
	if err != nil {
		return badRequest("Invalid multipart body: %v", err)
	}
	tmpDir, err := os.MkdirTemp("", "kiln-upload-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmpDir) }()
	up := &upload{}
	defer up.close()
	if err := a.readUpload(mr, tmpDir, up); err != nil {
		return err
	}
	if !up.haveData {
		return badRequest("Invalid multipart body: the data field (JSON) is missing")
	}
	rev, err := decodeCodeData(up.data)
	if err != nil {
		return err
	}
	if up.zip == nil {
		return badRequest("Invalid multipart body: the file field (a zip of the code) is missing")
	}
	if err := checkZip(up.zip, up.zipSize, filepath.Join(tmpDir, "unpacked"), rev); err != nil {
		return err
	}
	if _, err := up.zip.Seek(0, io.SeekStart); err != nil {
		return err
	}
	code, stored, err := a.reg.Upload(c.ctx(), c.pid, rev, up.zip, a.cfg.MaxCodeBytes)
	if err != nil {
		return err
	}
	if a.cfg.OnUpload != nil {
		a.cfg.OnUpload()
	}
	return c.ok(map[string]any{"id": code.ID, "msg": "Upload successful.", "status_code": http.StatusOK, "rev": stored.Rev})
}

// upload is what readUpload read of a code upload.
type upload struct {
	data     []byte
	haveData bool
	zip      *os.File // nil when no file field came
	zipSize  int64
}

func (u *upload) close() {
	if u.zip != nil {
		_ = u.zip.Close()
	}
}

// readUpload reads the parts of a code upload into up: the data field into
// memory (at most maxDataBytes), the file field into a temporary file in
// tmpDir (at most MaxCodeBytes). A field given twice, an unknown field or
// one over its cap fails the upload.
func (a *API) readUpload(mr *multipart.Reader, tmpDir string, up *upload) error {
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return asBodyError(err, "Invalid multipart body: %v", err)
		}
		switch part.FormName() {
		case "data":
			if up.haveData {
				return badRequest("Invalid multipart body: more than one data field")
			}
			up.haveData = true
			up.data, err = io.ReadAll(io.LimitReader(part, maxDataBytes+1))
			if err != nil {
				return asBodyError(err, "Invalid multipart body: %v", err)
			}
			if len(up.data) > maxDataBytes {
				return errStatus(http.StatusRequestEntityTooLarge, "the data field is larger than %d bytes", maxDataBytes)
			}
		case "file":
			if up.zip != nil {
				return badRequest("Invalid multipart body: more than one file field")
			}
			up.zip, err = os.CreateTemp(tmpDir, "code-*.zip")
			if err != nil {
				return err
			}
			up.zipSize, err = io.Copy(up.zip, io.LimitReader(part, a.cfg.MaxCodeBytes+1))
			if err != nil {
				return asBodyError(err, "Invalid multipart body: %v", err)
			}
			if up.zipSize > a.cfg.MaxCodeBytes {
				return errStatus(http.StatusRequestEntityTooLarge, "the zip is larger than %d bytes", a.cfg.MaxCodeBytes)
			}
		default:
			return badRequest("Invalid multipart body: unknown field %q (want data and file)", trunc(part.FormName()))
		}
		_ = part.Close()
	}
}

// checkZip unpacks the zip into dir the way the runner will, and checks
// that the program rev names (file_name, or a command's relative path) is a
// file in it.
func checkZip(zip *os.File, size int64, dir string, rev hosted.Revision) error {
	man, err := runner.Unpack(zip, size, dir, runner.Limits{})
	if err != nil {
		return badRequest("Invalid zip: %v", err)
	}
	if rev.FileName != "" {
		e, ok := man.Lookup(rev.FileName)
		if !ok || e.Mode.IsDir() {
			return badRequest("Invalid zip: file_name %q is not a file in the zip", trunc(rev.FileName))
		}
	} else if argv := rev.Argv(); strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		if e, ok := man.Lookup(filepath.ToSlash(filepath.Clean(argv[0]))); !ok || e.Mode.IsDir() {
			return badRequest("Invalid zip: the command's program %q is not a file in the zip", trunc(argv[0]))
		}
	}
	return nil
}

// checkLength refuses (413) a request whose declared Content-Length is
// beyond limit, before any of its body is read.
func checkLength(c *call, limit int64) error {
	if c.r.ContentLength > limit {
		return errStatus(http.StatusRequestEntityTooLarge, "Request body too large: %d bytes, more than %d", c.r.ContentLength, limit)
	}
	return nil
}

// asBodyError keeps a body-size error (413) and makes any other a 400.
func asBodyError(err error, format string, args ...any) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return badRequest(format, args...)
}

// codeJSON is a code package as the API shows it.
type codeJSON struct {
	ID              string            `json:"id"`
	ProjectID       string            `json:"project_id"`
	Name            string            `json:"name"`
	CreatedAt       time.Time         `json:"created_at"`
	UpdatedAt       time.Time         `json:"updated_at"`
	Rev             int               `json:"rev"`
	LatestHistoryID string            `json:"latest_history_id"`
	LatestChange    time.Time         `json:"latest_change"`
	LatestChecksum  string            `json:"latest_checksum"`
	Runtime         string            `json:"runtime,omitempty"`
	FileName        string            `json:"file_name,omitempty"`
	Command         string            `json:"command,omitempty"`
	Config          string            `json:"config,omitempty"`
	EnvVars         map[string]string `json:"env_vars,omitempty"`
	MaxConcurrency  int               `json:"max_concurrency"`
	Retries         int               `json:"retries"`
	RetriesDelay    int               `json:"retries_delay"`
	DefaultPriority int               `json:"default_priority"`
	Size            int64             `json:"code_size"`
	Paused          bool              `json:"paused"`
}

// revisionJSON is one revision as the API shows it.
type revisionJSON struct {
	ID        string    `json:"id"`
	CodeID    string    `json:"code_id"`
	ProjectID string    `json:"project_id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Rev       int       `json:"rev"`
	Checksum  string    `json:"checksum"`
	Size      int64     `json:"code_size"`
	Runtime   string    `json:"runtime,omitempty"`
	FileName  string    `json:"file_name,omitempty"`
	Command   string    `json:"command,omitempty"`
}

func historyID(codeID string, rev int) string { return codeID + "-" + strconv.Itoa(rev) }

func (c *call) codeJSON(code *hosted.Code, rev *hosted.Revision, paused bool) codeJSON {
	return codeJSON{
		ID: code.ID, ProjectID: c.pid, Name: code.Name, CreatedAt: code.CreatedAt, UpdatedAt: rev.CreatedAt,
		Rev: rev.Rev, LatestHistoryID: historyID(code.ID, rev.Rev), LatestChange: rev.CreatedAt, LatestChecksum: rev.SHA256,
		Runtime: rev.Runtime, FileName: rev.FileName, Command: rev.Command, Config: rev.Config, EnvVars: rev.EnvVars,
		MaxConcurrency: rev.MaxConcurrency, Retries: rev.Retries, RetriesDelay: rev.RetriesDelay,
		DefaultPriority: rev.DefaultPriority, Size: rev.Size, Paused: paused,
	}
}

// pausedQueues returns the project's paused queues.
func (c *call) pausedQueues() (map[string]bool, error) {
	res, err := c.a.st.Stats(c.ctx(), store.StatsParams{Namespace: c.pid})
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool)
	for _, q := range res.Queues {
		if q.Paused {
			out[q.Queue] = true
		}
	}
	return out, nil
}

// page reads page and per_page: page from 0 (at most 100), per_page 1..100
// (default 30).
func (c *call) page() (page, perPage int, err error) {
	q := c.r.URL.Query()
	page, perPage = 0, 30
	if s := q.Get("page"); s != "" {
		page, err = strconv.Atoi(s)
		if err != nil || page < 0 || page > 100 {
			return 0, 0, badRequest("page must be an integer in 0..100")
		}
	}
	if s := q.Get("per_page"); s != "" {
		perPage, err = strconv.Atoi(s)
		if err != nil || perPage < 1 || perPage > 100 {
			return 0, 0, badRequest("per_page must be an integer in 1..100")
		}
	}
	return page, perPage, nil
}

func (a *API) listCodes(c *call) error {
	page, perPage, err := c.page()
	if err != nil {
		return err
	}
	codes, err := a.reg.List(c.ctx(), c.pid)
	if err != nil {
		return err
	}
	paused, err := c.pausedQueues()
	if err != nil {
		return err
	}
	out := []codeJSON{}
	for i := page * perPage; i < len(codes) && len(out) < perPage; i++ {
		rev, err := a.reg.Latest(c.ctx(), c.pid, codes[i].ID)
		if errors.Is(err, hosted.ErrNotFound) {
			continue // its first revision is being uploaded
		}
		if err != nil {
			return err
		}
		out = append(out, c.codeJSON(codes[i], rev, paused[hosted.TaskType(codes[i].Name)]))
	}
	return c.ok(map[string]any{"codes": out})
}

// code finds the route's package and its latest revision.
func (c *call) code() (*hosted.Code, *hosted.Revision, error) {
	code, err := c.a.reg.ByID(c.ctx(), c.pid, c.r.PathValue("cid"))
	if errors.Is(err, hosted.ErrNotFound) {
		return nil, nil, notFound("Code not found")
	}
	if err != nil {
		return nil, nil, err
	}
	rev, err := c.a.reg.Latest(c.ctx(), c.pid, code.ID)
	if errors.Is(err, hosted.ErrNotFound) {
		return nil, nil, notFound("Code not found")
	}
	return code, rev, err
}

func (a *API) getCode(c *call) error {
	code, rev, err := c.code()
	if err != nil {
		return err
	}
	paused, err := c.pausedQueues()
	if err != nil {
		return err
	}
	return c.ok(c.codeJSON(code, rev, paused[hosted.TaskType(code.Name)]))
}

// deleteCode deletes a package and cancels its tasks that have not
// finished (no runner serves them any more).
func (a *API) deleteCode(c *call) error {
	code, _, err := c.code()
	if err != nil {
		return err
	}
	if err := a.reg.Delete(c.ctx(), c.pid, code); err != nil {
		return err
	}
	if err := a.cancelAll(c, hosted.TaskType(code.Name)); err != nil {
		return err
	}
	return c.ok(map[string]any{"msg": "Deleted"})
}

// cancelAllCode cancels every unfinished task of the package (the Ruby and
// Node clients' tasks_cancel_all).
func (a *API) cancelAllCode(c *call) error {
	code, _, err := c.code()
	if err != nil {
		return err
	}
	if err := a.cancelAll(c, hosted.TaskType(code.Name)); err != nil {
		return err
	}
	return c.ok(map[string]any{"msg": "Cancelled"})
}

// cancelAll cancels every unfinished task of type typ.
func (a *API) cancelAll(c *call, typ string) error {
	cursor := ""
	for {
		res, err := a.st.List(c.ctx(), store.ListParams{
			Namespace: c.pid, Type: typ, Limit: store.MaxListLimit, Cursor: cursor,
			States: []store.State{store.StateScheduled, store.StatePending, store.StateActive, store.StateRetry},
		})
		if err != nil {
			return err
		}
		idList := make([]string, 0, len(res.Tasks))
		for _, t := range res.Tasks {
			idList = append(idList, t.ID)
		}
		if len(idList) > 0 {
			if _, err := a.st.Cancel(c.ctx(), store.IDsParams{Namespace: c.pid, IDs: idList}); err != nil {
				return err
			}
		}
		if res.NextCursor == "" {
			return nil
		}
		cursor = res.NextCursor
	}
}

func (a *API) downloadCode(c *call) error {
	code, rev, err := c.code()
	if err != nil {
		return err
	}
	if s := c.r.URL.Query().Get("revision"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return badRequest("revision must be a positive integer")
		}
		rev, err = a.reg.Revision(c.ctx(), c.pid, code.ID, n)
		if errors.Is(err, hosted.ErrNotFound) {
			return notFound("Revision not found")
		}
		if err != nil {
			return err
		}
	}
	rd, err := a.reg.OpenZip(c.ctx(), c.pid, rev)
	if errors.Is(err, hosted.ErrNotFound) {
		return notFound("Revision not found")
	}
	if err != nil {
		return err
	}
	h := c.w.Header()
	h.Set("Content-Type", "application/zip")
	h.Set("Content-Length", strconv.FormatInt(rev.Size, 10))
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": fmt.Sprintf("%s_%d.zip", code.Name, rev.Rev)}))
	c.w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(c.w, rd); err != nil && !errors.Is(err, blob.ErrCorrupt) {
		a.log.WarnContext(c.ctx(), "ironapi: download interrupted", "code", code.ID, "err", err)
	} else if err != nil {
		a.log.ErrorContext(c.ctx(), "ironapi: stored zip is corrupt", "code", code.ID, "rev", rev.Rev, "err", err)
	}
	return nil
}

func (a *API) codeRevisions(c *call) error {
	code, _, err := c.code()
	if err != nil {
		return err
	}
	page, perPage, err := c.page()
	if err != nil {
		return err
	}
	revs, err := a.reg.Revisions(c.ctx(), c.pid, code.ID)
	if err != nil {
		return err
	}
	slices.Reverse(revs) // newest first
	out := []revisionJSON{}
	for i := page * perPage; i < len(revs) && len(out) < perPage; i++ {
		r := revs[i]
		out = append(out, revisionJSON{
			ID: historyID(code.ID, r.Rev), CodeID: code.ID, ProjectID: c.pid, Name: code.Name,
			CreatedAt: r.CreatedAt, UpdatedAt: r.CreatedAt, Rev: r.Rev, Checksum: r.SHA256, Size: r.Size,
			Runtime: r.Runtime, FileName: r.FileName, Command: r.Command,
		})
	}
	return c.ok(map[string]any{"revisions": out})
}

// codeStats counts the package's tasks by IronWorker status (start_date
// and end_date are not supported: all the tasks the store keeps).
func (a *API) codeStats(c *call) error {
	code, _, err := c.code()
	if err != nil {
		return err
	}
	typ := hosted.TaskType(code.Name)
	res, err := a.st.Stats(c.ctx(), store.StatsParams{Namespace: c.pid, Queues: []string{typ}})
	if err != nil {
		return err
	}
	out := map[string]int64{"queued": 0, "preparing": 0, "running": 0, "complete": 0, "error": 0, "cancelled": 0, "timeout": 0}
	for _, q := range res.Queues {
		out["queued"] += q.Counts[store.StateScheduled] + q.Counts[store.StatePending] + q.Counts[store.StateRetry]
		out["running"] += q.Counts[store.StateActive]
		out["complete"] += q.Counts[store.StateSucceeded]
		out["cancelled"] += q.Counts[store.StateCancelled]
		out["error"] += q.Counts[store.StateDead]
	}
	if out["error"] > 0 { // split timeouts from errors
		cursor := ""
		for {
			lr, err := a.st.List(c.ctx(), store.ListParams{Namespace: c.pid, Type: typ, States: []store.State{store.StateDead}, Limit: store.MaxListLimit, Cursor: cursor})
			if err != nil {
				return err
			}
			for _, t := range lr.Tasks {
				if st, _ := hosted.ParseLastError(t.LastError); st == "timeout" {
					out["timeout"]++
					out["error"]--
				}
			}
			if lr.NextCursor == "" {
				break
			}
			cursor = lr.NextCursor
		}
	}
	return c.ok(out)
}

func (a *API) pauseCode(c *call) error  { return a.setPaused(c, true) }
func (a *API) resumeCode(c *call) error { return a.setPaused(c, false) }
func (a *API) setPaused(c *call, paused bool) error {
	code, _, err := c.code()
	if err != nil {
		return err
	}
	if err := a.st.SetQueuePaused(c.ctx(), store.QueuePauseParams{Namespace: c.pid, Queue: hosted.TaskType(code.Name), Paused: paused}); err != nil {
		return err
	}
	if paused {
		return c.ok(map[string]any{"msg": "Paused"})
	}
	return c.ok(map[string]any{"msg": "Resumed"})
}
