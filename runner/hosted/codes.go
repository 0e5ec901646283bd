package hosted

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/kilnhq/kiln/internal/blob"
	"github.com/kilnhq/kiln/internal/ids"
	"github.com/kilnhq/kiln/store"
)

// IndexNamespace is the store namespace of the index of every project's
// code packages, which runners read to find the queues to serve. No
// project can take it: project ids never start with "_".
const IndexNamespace = "_hosted"

// Keys of the records, in the project's namespace (and IndexNamespace).
const (
	keyCode     = "iron/code/"     // + name -> Code
	keyCodeID   = "iron/codeid/"   // + code id -> name
	keyRev      = "iron/rev/"      // + code id + "/" + rev -> Revision
	keyRevClaim = "iron/revclaim/" // + code id + "/" + rev -> claimed by an upload
	keyZip      = "iron/zip/"      // + code id + "/" + rev -> blob of the zip
	keyLog      = "iron/log/"      // + task id -> log chunks
	keyProgress = "iron/progress/" // + task id -> Progress
	keyTask     = "iron/task/"     // + task id -> {}: the task has a log or progress (for Collect)
	keyIndex    = "pkg/"           // + project + "/" + name (IndexNamespace) -> IndexEntry
)

// MaxNameLen is the longest code package name: its task type is
// TypePrefix + name, and a type has at most store.MaxNameLen bytes.
const MaxNameLen = store.MaxNameLen - len(TypePrefix)

// TypePrefix starts the task type and the queue of a code package's
// tasks: "code:<name>".
const TypePrefix = "code:"

// TaskType returns the kiln task type (and queue) of package name's tasks.
func TaskType(name string) string { return TypePrefix + name }

// ErrNotFound is returned for a package or revision that does not exist.
var ErrNotFound = errors.New("hosted: not found")

// CheckName validates a code package name: 1 to MaxNameLen characters of
// [A-Za-z0-9._:-], not "." or "..".
func CheckName(name string) error {
	if len(name) > MaxNameLen || !store.ValidName(name) {
		return fmt.Errorf("the code name %q must be 1-%d characters of A-Z a-z 0-9 . _ : -", trunc(name), MaxNameLen)
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Code is a code package: a name with revisions.
type Code struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Revision is one upload of a code package: its settings and its zip.
type Revision struct {
	CodeID    string    `json:"code_id"`
	Name      string    `json:"name"`
	Rev       int       `json:"rev"`
	CreatedAt time.Time `json:"created_at"`
	// Runtime and FileName say how to run the package (runner.Spec), or
	// Command, split on white space (no shell).
	Runtime  string `json:"runtime,omitempty"`
	FileName string `json:"file_name,omitempty"`
	Command  string `json:"command,omitempty"`
	Stack    string `json:"stack,omitempty"`
	Image    string `json:"image,omitempty"`
	// Config is given to each task as the -config file.
	Config  string            `json:"config,omitempty"`
	EnvVars map[string]string `json:"env_vars,omitempty"`
	// MaxConcurrency caps how many tasks of the package one runner runs at
	// once; 0 means no cap beyond the runner's.
	MaxConcurrency  int `json:"max_concurrency,omitempty"`
	Retries         int `json:"retries,omitempty"`
	RetriesDelay    int `json:"retries_delay,omitempty"`
	DefaultPriority int `json:"default_priority,omitempty"`
	// Size and SHA256 describe the zip.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Argv returns the command's argv (the command split on white space).
func (r *Revision) Argv() []string { return strings.Fields(r.Command) }

// IndexEntry is the record of a package in IndexNamespace.
type IndexEntry struct {
	Project string `json:"project"`
	Name    string `json:"name"`
	// MaxConcurrency is the latest revision's.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
}

// Registry keeps code packages in a store's store.Meta: records in the
// project's namespace, the zips as blobs (package internal/blob), and an
// index in IndexNamespace. It is safe for concurrent use, also by several
// processes sharing the store.
type Registry struct {
	meta  store.Meta
	clock store.Clock
}

// NewRegistry returns a registry over m; a nil clock means the system
// clock.
func NewRegistry(m store.Meta, clock store.Clock) *Registry {
	if clock == nil {
		clock = store.SystemClock{}
	}
	return &Registry{meta: m, clock: clock}
}

func (r *Registry) get(ctx context.Context, ns, key string, v any) (bool, error) {
	res, err := r.meta.MetaGet(ctx, store.MetaGetParams{Namespace: ns, Key: key})
	if err != nil || !res.Found {
		return false, err
	}
	if err := json.Unmarshal(res.Value, v); err != nil {
		return false, fmt.Errorf("hosted: record %s: %w", key, err)
	}
	return true, nil
}

func (r *Registry) put(ctx context.Context, ns, key string, v any, ifAbsent bool) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	res, err := r.meta.MetaPut(ctx, store.MetaPutParams{Namespace: ns, Key: key, Value: b, IfAbsent: ifAbsent})
	return res.Stored, err
}

func revKey(prefix, codeID string, rev int) string {
	return fmt.Sprintf("%s%s/%010d", prefix, codeID, rev)
}

// Lookup returns the package named name, or ErrNotFound.
func (r *Registry) Lookup(ctx context.Context, project, name string) (*Code, error) {
	var c Code
	found, err := r.get(ctx, project, keyCode+name, &c)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return &c, nil
}

// ByID returns the package with id, or ErrNotFound.
func (r *Registry) ByID(ctx context.Context, project, id string) (*Code, error) {
	if !ids.Valid(id) {
		return nil, ErrNotFound
	}
	var name string
	found, err := r.get(ctx, project, keyCodeID+id, &name)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	c, err := r.Lookup(ctx, project, name)
	if err != nil {
		return nil, err
	}
	if c.ID != id {
		return nil, ErrNotFound
	}
	return c, nil
}

// List returns the project's packages by name.
func (r *Registry) List(ctx context.Context, project string) ([]*Code, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: project, Prefix: keyCode})
	if err != nil {
		return nil, err
	}
	out := make([]*Code, 0, len(res.Items))
	for _, it := range res.Items {
		var c Code
		if err := json.Unmarshal(it.Value, &c); err != nil {
			return nil, fmt.Errorf("hosted: record %s: %w", it.Key, err)
		}
		out = append(out, &c)
	}
	return out, nil
}

// Revisions returns the package's revisions, oldest first.
func (r *Registry) Revisions(ctx context.Context, project, codeID string) ([]*Revision, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: project, Prefix: keyRev + codeID + "/"})
	if err != nil {
		return nil, err
	}
	out := make([]*Revision, 0, len(res.Items))
	for _, it := range res.Items {
		var rv Revision
		if err := json.Unmarshal(it.Value, &rv); err != nil {
			return nil, fmt.Errorf("hosted: record %s: %w", it.Key, err)
		}
		out = append(out, &rv)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rev < out[j].Rev })
	return out, nil
}

// Latest returns the package's newest revision, or ErrNotFound.
func (r *Registry) Latest(ctx context.Context, project, codeID string) (*Revision, error) {
	revs, err := r.Revisions(ctx, project, codeID)
	if err != nil {
		return nil, err
	}
	if len(revs) == 0 {
		return nil, ErrNotFound
	}
	return revs[len(revs)-1], nil
}

// TaskDefaults gives a task of a code package (type TaskType(name))
// enqueued through the server's native API what it gets through the
// IronWorker API: the package's queue (named like the type, where the
// runner takes its tasks) unless queueGiven, and the retries of the
// package's latest revision as its MaxRetries, whatever the request said
// (store/remote always sends one), so that the package's task retries as
// the package says by every door. Another type, or a package that does
// not exist (yet), keeps its retries.
func (r *Registry) TaskDefaults(ctx context.Context, project string, in *store.TaskInput, queueGiven bool) error {
	if !strings.HasPrefix(in.Type, TypePrefix) {
		return nil
	}
	if !queueGiven {
		in.Queue = in.Type
	}
	n, found, err := r.retries(ctx, project, in.Type)
	if err != nil {
		return err
	}
	if found {
		in.MaxRetries = n
	}
	return nil
}

// retries returns the retries of the latest revision of the code package
// whose tasks have type typ in project; found is false for a type that is
// not a code package's and for a package or revision that does not exist.
func (r *Registry) retries(ctx context.Context, project, typ string) (retries int, found bool, err error) {
	name, ok := strings.CutPrefix(typ, TypePrefix)
	if !ok || CheckName(name) != nil {
		return 0, false, nil
	}
	c, err := r.Lookup(ctx, project, name)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	rev, err := r.Latest(ctx, project, c.ID)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	return rev.Retries, true, nil
}

// Revision returns one revision, or ErrNotFound.
func (r *Registry) Revision(ctx context.Context, project, codeID string, rev int) (*Revision, error) {
	var rv Revision
	found, err := r.get(ctx, project, revKey(keyRev, codeID, rev), &rv)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrNotFound
	}
	return &rv, nil
}

// Upload stores zip (at most maxSize bytes) as a new revision of the
// package rev.Name, creating the package if needed, and returns the
// package and the revision as stored. The zip must have been validated.
// The revision becomes visible only once the zip is stored in full.
func (r *Registry) Upload(ctx context.Context, project string, rev Revision, zip io.Reader, maxSize int64) (*Code, *Revision, error) {
	if err := CheckName(rev.Name); err != nil {
		return nil, nil, err
	}
	now := r.clock.Now().UTC()
	c, err := r.Lookup(ctx, project, rev.Name)
	if errors.Is(err, ErrNotFound) {
		nc := Code{ID: ids.New(), Name: rev.Name, CreatedAt: now}
		// The id index first: a package is found by id as soon as by name.
		if _, err := r.put(ctx, project, keyCodeID+nc.ID, nc.Name, true); err != nil {
			return nil, nil, err
		}
		stored, err := r.put(ctx, project, keyCode+nc.Name, nc, true)
		if err != nil {
			return nil, nil, err
		}
		if !stored { // another upload created it first
			_, _ = r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: project, Key: keyCodeID + nc.ID}) // best effort: an id nothing names
		}
		c, err = r.Lookup(ctx, project, rev.Name)
		if err != nil {
			return nil, nil, err
		}
	} else if err != nil {
		return nil, nil, err
	}
	revs, err := r.Revisions(ctx, project, c.ID)
	if err != nil {
		return nil, nil, err
	}
	next := 1
	if len(revs) > 0 {
		next = revs[len(revs)-1].Rev + 1
	}
	// Claim a revision number: concurrent uploads get different ones.
	for ; ; next++ {
		stored, err := r.put(ctx, project, revKey(keyRevClaim, c.ID, next), now, true)
		if err != nil {
			return nil, nil, err
		}
		if stored {
			break
		}
	}
	info, err := blob.Put(ctx, r.meta, project, revKey(keyZip, c.ID, next), zip, maxSize)
	if err != nil {
		return nil, nil, err
	}
	rev.CodeID, rev.Rev, rev.CreatedAt, rev.Size, rev.SHA256 = c.ID, next, now, info.Size, info.SHA256
	if _, err := r.put(ctx, project, revKey(keyRev, c.ID, next), rev, true); err != nil {
		return nil, nil, err
	}
	entry := IndexEntry{Project: project, Name: rev.Name, MaxConcurrency: rev.MaxConcurrency}
	if _, err := r.put(ctx, IndexNamespace, keyIndex+project+"/"+rev.Name, entry, false); err != nil {
		return nil, nil, err
	}
	return c, &rev, nil
}

// OpenZip returns a reader of a revision's zip; it fails at the end if the
// bytes do not match the revision's checksum.
func (r *Registry) OpenZip(ctx context.Context, project string, rev *Revision) (io.Reader, error) {
	rd, info, err := blob.Open(ctx, r.meta, project, revKey(keyZip, rev.CodeID, rev.Rev))
	if errors.Is(err, blob.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if info.SHA256 != rev.SHA256 {
		return nil, fmt.Errorf("%w: revision %d of %s", blob.ErrCorrupt, rev.Rev, rev.Name)
	}
	return rd, nil
}

// Delete removes a package: its name first (it is gone for the API and
// the runners at once), then its revisions and zips.
func (r *Registry) Delete(ctx context.Context, project string, c *Code) error {
	del := func(ns, key string) error {
		_, err := r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: ns, Key: key})
		return err
	}
	if err := del(project, keyCode+c.Name); err != nil {
		return err
	}
	if err := del(IndexNamespace, keyIndex+project+"/"+c.Name); err != nil {
		return err
	}
	if err := del(project, keyCodeID+c.ID); err != nil {
		return err
	}
	for _, prefix := range []string{keyRev, keyZip, keyRevClaim, keySlot} {
		if err := blob.DeletePrefix(ctx, r.meta, project, prefix+c.ID+"/"); err != nil {
			return err
		}
	}
	return nil
}

// Index returns every package of every project, for the runners.
func (r *Registry) Index(ctx context.Context) ([]IndexEntry, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: IndexNamespace, Prefix: keyIndex})
	if err != nil {
		return nil, err
	}
	out := make([]IndexEntry, 0, len(res.Items))
	for _, it := range res.Items {
		var e IndexEntry
		if err := json.Unmarshal(it.Value, &e); err != nil {
			return nil, fmt.Errorf("hosted: record %s: %w", it.Key, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Progress is what a task reported through the API.
type Progress struct {
	Percent int    `json:"percent"`
	Msg     string `json:"msg,omitempty"`
}

// SetProgress records a task's progress.
func (r *Registry) SetProgress(ctx context.Context, project, taskID string, p Progress) error {
	if err := r.MarkTask(ctx, project, taskID); err != nil {
		return err
	}
	_, err := r.put(ctx, project, keyProgress+taskID, p, false)
	return err
}

// MarkTask records that the registry keeps something about a task (a log,
// progress), so that Collect finds it once the task is gone.
func (r *Registry) MarkTask(ctx context.Context, project, taskID string) error {
	_, err := r.put(ctx, project, keyTask+taskID, struct{}{}, true)
	return err
}

// Collect removes the logs and progress of the project's tasks that the
// store no longer has (their retention ran out, or they were deleted), and
// returns how many tasks it cleaned up.
func (r *Registry) Collect(ctx context.Context, st store.Reader, project string) (int, error) {
	res, err := r.meta.MetaList(ctx, store.MetaListParams{Namespace: project, Prefix: keyTask})
	if err != nil {
		return 0, err
	}
	n := 0
	for start := 0; start < len(res.Items); start += store.MaxListLimit {
		batch := res.Items[start:min(start+store.MaxListLimit, len(res.Items))]
		idList := make([]string, len(batch))
		for i, it := range batch {
			idList[i] = strings.TrimPrefix(it.Key, keyTask)
		}
		got, err := st.Get(ctx, store.GetParams{Namespace: project, IDs: idList})
		if err != nil {
			return n, err
		}
		for i, t := range got.Tasks {
			if t != nil {
				continue
			}
			if err := r.Forget(ctx, project, idList[i]); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// Progress returns a task's progress, if it reported any.
func (r *Registry) Progress(ctx context.Context, project, taskID string) (Progress, bool, error) {
	var p Progress
	found, err := r.get(ctx, project, keyProgress+taskID, &p)
	return p, found, err
}

// LogKey is the key of a task's log (blob.Log) in its project's namespace.
func LogKey(taskID string) string { return keyLog + taskID }

// ReadLog returns a task's log and whether any was written.
func (r *Registry) ReadLog(ctx context.Context, project, taskID string) ([]byte, bool, error) {
	return blob.ReadLog(ctx, r.meta, project, LogKey(taskID))
}

// Forget removes what the registry keeps about a task (log, progress).
func (r *Registry) Forget(ctx context.Context, project, taskID string) error {
	if _, err := r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: project, Key: keyProgress + taskID}); err != nil {
		return err
	}
	if err := blob.DeletePrefix(ctx, r.meta, project, LogKey(taskID)+"/"); err != nil {
		return err
	}
	_, err := r.meta.MetaDelete(ctx, store.MetaDeleteParams{Namespace: project, Key: keyTask + taskID})
	return err
}

// Envelope is the payload of a code package's kiln task: the IronWorker
// payload and the settings the task was queued with.
type Envelope struct {
	Payload  string `json:"payload"`
	CodeID   string `json:"code_id"`
	CodeName string `json:"code_name"`
	// Rev is the revision to run; 0 means the latest when the task runs
	// (the tasks of schedules).
	Rev int `json:"rev"`
	// Timeout is the run's wall-clock limit in seconds.
	Timeout int    `json:"timeout"`
	Delay   int    `json:"delay,omitempty"`
	Label   string `json:"label,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	// RetriesDelay is the package's retries_delay in seconds.
	RetriesDelay int `json:"retries_delay,omitempty"`
	// ScheduleID and ScheduleName name the schedule that queued the task,
	// if any.
	ScheduleID   string `json:"schedule_id,omitempty"`
	ScheduleName string `json:"schedule_name,omitempty"`

	// native is set on the envelope revisionOf makes for a task that came
	// without one: the package's retry settings apply when it fails.
	native bool
}

// The statuses a task's error text starts with (kiln's LastError), so the
// IronWorker status of a failed task survives in the store.
const (
	ErrPrefixError   = "error: "
	ErrPrefixTimeout = "timeout: "
)

// ParseLastError splits a kiln LastError into its IronWorker status
// ("error" or "timeout") and message.
func ParseLastError(s string) (status, msg string) {
	switch {
	case strings.HasPrefix(s, ErrPrefixTimeout):
		return "timeout", s[len(ErrPrefixTimeout):]
	case strings.HasPrefix(s, ErrPrefixError):
		return "error", s[len(ErrPrefixError):]
	}
	return "error", s
}
