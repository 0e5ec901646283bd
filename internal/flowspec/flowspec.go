// Package flowspec is the format of kiln's workflows in the store: the spec
// kept in a flow's record (which tasks it has and how its results are
// shaped), and the envelope a workflow task's payload carries when it takes
// the results of the tasks before it.
package flowspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kilnhq/kiln/store"
)

// Spec is a workflow's record.
type Spec struct {
	V int `json:"v"`
	// Members lists every task of the workflow in the order it was built.
	Members []Member `json:"members"`
	// Final is the shape of the workflow's result.
	Final Shape `json:"final"`
	// Top has the shape of each top-level step's result, in order.
	Top []Shape `json:"top"`
}

// Member is one task of a workflow.
type Member struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	// Callback marks an OnError (or OnSuccess) callback: not part of the
	// workflow's own result, and its skipping is no failure.
	Callback bool `json:"callback,omitempty"`
}

// Shape says how results combine: a task's result (ID), or a list of
// shapes (a group's results in order).
type Shape struct {
	ID     string  `json:"id,omitempty"`
	IsList bool    `json:"is_list,omitempty"`
	List   []Shape `json:"list,omitempty"`
}

// IDs returns the task ids of s, depth first.
func (s Shape) IDs() []string {
	var out []string
	if s.IsList {
		out = make([]string, 0, len(s.List))
	}
	var walk func(Shape)
	walk = func(s Shape) {
		if !s.IsList {
			out = append(out, s.ID)
			return
		}
		for _, c := range s.List {
			walk(c)
		}
	}
	walk(s)
	return out
}

// Render returns the JSON value of s: a task's result (null when it has
// none), or a JSON array of the values of the list.
func (s Shape) Render(results map[string][]byte) []byte {
	return s.RenderWith(func(id string) []byte { return results[id] })
}

// RenderWith is Render with the result of each task given by result (nil
// when it has none).
func (s Shape) RenderWith(result func(id string) []byte) []byte {
	var b bytes.Buffer
	var walk func(Shape)
	walk = func(s Shape) {
		if !s.IsList {
			r := bytes.TrimSpace(result(s.ID))
			if len(r) == 0 {
				r = []byte("null")
			}
			b.Write(r)
			return
		}
		b.WriteByte('[')
		for i, c := range s.List {
			if i > 0 {
				b.WriteByte(',')
			}
			walk(c)
		}
		b.WriteByte(']')
	}
	walk(s)
	return b.Bytes()
}

// Magic starts the payload of a workflow task that carries an Envelope;
// no JSON text starts with a NUL byte.
const Magic = "\x00kiln-workflow-1\x00"

// The policies of Envelope.RunIf.
const (
	// RunIfOK runs the task when every task it waits for succeeded.
	RunIfOK = ""
	// RunIfFailed runs the task when a task it waits for failed for good
	// (an error callback).
	RunIfFailed = "failed"
)

// Envelope is what a workflow task that waits for others carries.
type Envelope struct {
	// Flow is the workflow's id.
	Flow string `json:"flow"`
	// Args are the task's own arguments, JSON each.
	Args []json.RawMessage `json:"args,omitempty"`
	// In, when set, is the shape of the results appended to Args.
	In *Shape `json:"in,omitempty"`
	// After lists the tasks it waits for (the store releases it when they
	// have all finished).
	After []string `json:"after"`
	// RunIf is its policy (RunIfOK or RunIfFailed).
	RunIf string `json:"run_if,omitempty"`
}

// envelopeJSON is the JSON of an Envelope. The compact fields CIn and
// CAfter name the tasks by position in the flow (see EncodeSpec) and
// replace In and After when every id follows that rule: a worker older
// than the compact form finds no After and fails the task, rather than
// running it without its input.
type envelopeJSON struct {
	Flow   string            `json:"flow"`
	Args   []json.RawMessage `json:"args,omitempty"`
	In     *Shape            `json:"in,omitempty"`
	After  []string          `json:"after,omitempty"`
	RunIf  string            `json:"run_if,omitempty"`
	CIn    json.RawMessage   `json:"cin,omitempty"`
	CAfter json.RawMessage   `json:"cafter,omitempty"`
}

// Encode returns the payload that carries e, in the compact form when
// its ids allow.
func (e *Envelope) Encode() ([]byte, error) {
	j := envelopeJSON{Flow: e.Flow, Args: e.Args, RunIf: e.RunIf}
	p := positions{prefix: e.Flow + "."}
	after := Shape{IsList: true, List: make([]Shape, len(e.After))}
	for i, id := range e.After {
		after.List[i] = Shape{ID: id}
	}
	ca, ok := p.appendShape(nil, after)
	var ci []byte
	if ok && e.In != nil {
		ci, ok = p.appendShape(nil, *e.In)
	}
	if ok {
		j.CAfter, j.CIn = ca, ci
	} else {
		j.In, j.After = e.In, e.After
	}
	b, err := json.Marshal(&j)
	if err != nil {
		return nil, err
	}
	return append([]byte(Magic), b...), nil
}

// IsEnvelope reports whether a payload carries an Envelope.
func IsEnvelope(payload []byte) bool { return bytes.HasPrefix(payload, []byte(Magic)) }

// DecodeEnvelope decodes a payload made by Encode.
func DecodeEnvelope(payload []byte) (*Envelope, error) {
	if !IsEnvelope(payload) {
		return nil, errors.New("not a workflow envelope")
	}
	var j envelopeJSON
	if err := json.Unmarshal(payload[len(Magic):], &j); err != nil {
		return nil, fmt.Errorf("workflow envelope: %w", err)
	}
	e := Envelope{Flow: j.Flow, Args: j.Args, In: j.In, After: j.After, RunIf: j.RunIf}
	p := positions{prefix: j.Flow + "."}
	var after Shape
	if len(j.CAfter) > 0 {
		s, err := p.decodeShape(j.CAfter, 0)
		if err == nil && !s.IsList {
			err = errors.New("not a list")
		}
		if err != nil {
			return nil, fmt.Errorf("workflow envelope: the tasks it waits for: %w", err)
		}
		e.After = s.IDs()
		after = s
	}
	if len(j.CIn) > 0 && len(j.CAfter) > 0 && bytes.Equal(j.CIn, j.CAfter) {
		// A chord's callback takes as input the list it waits for: the
		// shape is decoded once, for both.
		e.In = &after
	} else if len(j.CIn) > 0 {
		s, err := p.decodeShape(j.CIn, 0)
		if err != nil {
			return nil, fmt.Errorf("workflow envelope: its input: %w", err)
		}
		e.In = &s
	}
	if len(e.After) == 0 {
		return nil, errors.New("workflow envelope: no task to wait for")
	}
	return &e, nil
}

// Payload returns the JSON payload a task with args and an input gets:
// null for nothing, the value alone for one, else an array of them all,
// the input last.
func Payload(args []json.RawMessage, input []byte) []byte {
	vals := args
	if input != nil {
		vals = append(append([]json.RawMessage(nil), args...), input)
	}
	switch len(vals) {
	case 0:
		return []byte("null")
	case 1:
		return append([]byte(nil), vals[0]...)
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(v)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// Upstream starts the error of a task that did not run because a task it
// waited for failed or was cancelled.
const Upstream = "upstream "

// Skipped starts the error of a callback that did not run because what it
// watches did not call for it.
const Skipped = "skipped: "

// The states of a workflow and of its members, beside the task states.
const (
	StateWaiting   = "waiting" // a held member: not enqueued yet
	StateGone      = "gone"    // a member deleted (or past its retention)
	StatePending   = "pending"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// MemberState is one member with its state.
type MemberState struct {
	ID, Type, State, Error string
	Callback               bool
	Task                   *store.Task // nil when waiting or gone
}

// Summarize returns the whole workflow's state and each member's, from the
// tasks read (nil where missing) and the held ids not yet released.
func Summarize(spec *Spec, tasks map[string]*store.Task, held []string) (string, []MemberState) {
	isHeld := make(map[string]bool, len(held))
	for _, h := range held {
		isHeld[h] = true
	}
	out := make([]MemberState, len(spec.Members))
	anyLive, anyStarted := false, false
	for i, m := range spec.Members {
		ms := MemberState{ID: m.ID, Type: m.Type, Callback: m.Callback}
		t := tasks[m.ID]
		switch {
		case t != nil:
			ms.State, ms.Error, ms.Task = t.State.String(), t.LastError, t
			if !t.State.Terminal() {
				anyLive = true
			}
			if t.State != store.StatePending && t.State != store.StateScheduled {
				anyStarted = true
			}
		case isHeld[m.ID]:
			ms.State = StateWaiting
			anyLive = true
		default:
			ms.State = StateGone
		}
		out[i] = ms
	}
	if anyLive {
		if anyStarted {
			return StateRunning, out
		}
		return StatePending, out
	}
	// Finished: the result's tasks say how.
	final := make(map[string]bool)
	for _, id := range spec.Final.IDs() {
		final[id] = true
	}
	state := StateSucceeded
	for _, ms := range out {
		if ms.Callback && !final[ms.ID] {
			continue
		}
		switch {
		case ms.State == store.StateDead.String() || ms.State == StateGone:
			return StateFailed, out
		case ms.State == store.StateCancelled.String():
			if strings.HasPrefix(ms.Error, Upstream) && ms.Task != nil {
				continue // decided by the member it waited for
			}
			state = StateCancelled
		}
	}
	return state, out
}

// RootCause returns the member whose failure made the workflow fail or
// stop: the first dead (or cancelled) member that did not fail because of
// another, or nil.
func RootCause(members []MemberState) *MemberState {
	var fallback *MemberState
	for i := range members {
		m := &members[i]
		if m.Callback {
			continue
		}
		if m.State == store.StateDead.String() || m.State == store.StateCancelled.String() {
			if !strings.HasPrefix(m.Error, Upstream) {
				return m
			}
			if fallback == nil {
				fallback = m
			}
		}
	}
	return fallback
}
