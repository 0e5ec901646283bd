package flowspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The compact format (spec version 2, and the compact fields of an
// envelope) names a task of the workflow by its position: every task id of
// a workflow built by kiln is the workflow's id, a dot and that position,
// so a chord's 10,000 member ids need not be written out, twice. A shape
// is then a JSON number (the task at that position), or an array of
// shapes, in which a string "a-b" stands for the tasks a to b (inclusive),
// each a shape of its own. A spec or envelope whose ids do not follow the
// rule is written in the full format (version 1), which every reader still
// reads.

// VersionFull is the version of the full spec format, where every member
// and shape names its task id.
const VersionFull = 1

// Version is the version of the spec format written: compact, members
// named by position.
const Version = 2

// compactSpec is the JSON of a version 2 spec.
type compactSpec struct {
	V int `json:"v"`
	// M lists the members in runs of the same type and callback flag.
	M     []memberRun       `json:"m"`
	Final json.RawMessage   `json:"f"`
	Top   []json.RawMessage `json:"top"`
}

type memberRun struct {
	Type     string `json:"t"`
	Callback bool   `json:"c,omitempty"`
	// N is the number of members of the run; 0 means 1.
	N int `json:"n,omitempty"`
}

// positions maps the task ids of flow id that follow the rule (id, a dot,
// a position) to their position; ok is false for any other id.
type positions struct{ prefix string }

func (p positions) of(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, p.prefix)
	if !ok || rest == "" || (rest[0] == '0' && len(rest) > 1) {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// appendShape appends the compact JSON of s; ok is false when a task id
// of s does not follow the rule.
func (p positions) appendShape(b []byte, s Shape) ([]byte, bool) {
	if !s.IsList {
		n, ok := p.of(s.ID)
		return strconv.AppendInt(b, int64(n), 10), ok
	}
	b = append(b, '[')
	for i := 0; i < len(s.List); {
		if i > 0 {
			b = append(b, ',')
		}
		c := s.List[i]
		if c.IsList {
			var ok bool
			if b, ok = p.appendShape(b, c); !ok {
				return b, false
			}
			i++
			continue
		}
		first, ok := p.of(c.ID)
		if !ok {
			return b, false
		}
		// A run of tasks at consecutive positions is one range.
		j := i + 1
		for j < len(s.List) && !s.List[j].IsList {
			n, ok := p.of(s.List[j].ID)
			if !ok || n != first+(j-i) {
				break
			}
			j++
		}
		if j-i >= 3 {
			b = append(b, '"')
			b = strconv.AppendInt(b, int64(first), 10)
			b = append(b, '-')
			b = strconv.AppendInt(b, int64(first+j-i-1), 10)
			b = append(b, '"')
		} else {
			b = strconv.AppendInt(b, int64(first), 10)
			if j-i == 2 {
				b = append(b, ',')
				b = strconv.AppendInt(b, int64(first+1), 10)
			}
		}
		i = j
	}
	return append(b, ']'), true
}

// maxCompactTasks bounds the positions a compact shape may name, so that
// a damaged range cannot make a reader allocate without bound.
const maxCompactTasks = 1 << 20

// decodeShape decodes a compact shape; a list's elements are appended to
// a fresh list.
func (p positions) decodeShape(raw json.RawMessage, depth int) (Shape, error) {
	raw = bytes.TrimSpace(raw)
	if depth > 200 {
		return Shape{}, errors.New("shape nested too deep")
	}
	if len(raw) == 0 {
		return Shape{}, errors.New("empty shape")
	}
	switch raw[0] {
	case '[':
		var elems []json.RawMessage
		if err := json.Unmarshal(raw, &elems); err != nil {
			return Shape{}, err
		}
		out := Shape{IsList: true, List: make([]Shape, 0, len(elems))}
		for _, e := range elems {
			e = bytes.TrimSpace(e)
			if len(e) > 0 && e[0] == '"' {
				var r string
				if err := json.Unmarshal(e, &r); err != nil {
					return Shape{}, err
				}
				a, z, ok := strings.Cut(r, "-")
				lo, err1 := strconv.Atoi(a)
				hi, err2 := strconv.Atoi(z)
				if !ok || err1 != nil || err2 != nil || lo < 0 || hi < lo || hi >= maxCompactTasks || len(out.List)+hi-lo >= maxCompactTasks {
					return Shape{}, fmt.Errorf("bad range %q", r)
				}
				// The ids of the range in one string, each a part of it.
				size := (hi - lo + 1) * (len(p.prefix) + len(z))
				buf := make([]byte, 0, size)
				for n := lo; n <= hi; n++ {
					buf = strconv.AppendInt(append(buf, p.prefix...), int64(n), 10)
				}
				all, at := string(buf), 0
				for n := lo; n <= hi; n++ {
					l := len(p.prefix) + digits(n)
					out.List = append(out.List, Shape{ID: all[at : at+l]})
					at += l
				}
				continue
			}
			s, err := p.decodeShape(e, depth+1)
			if err != nil {
				return Shape{}, err
			}
			out.List = append(out.List, s)
		}
		return out, nil
	default:
		n, err := strconv.Atoi(string(raw))
		if err != nil || n < 0 || n >= maxCompactTasks {
			return Shape{}, fmt.Errorf("bad task position %.20q", raw)
		}
		return Shape{ID: p.prefix + strconv.Itoa(n)}, nil
	}
}

// digits returns the number of decimal digits of n >= 0.
func digits(n int) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// EncodeSpec returns the stored form of the spec of workflow id: compact
// (Version) when every member's id is id, a dot and its position, else the
// full form (VersionFull).
func EncodeSpec(id string, s *Spec) ([]byte, error) {
	if b, ok := encodeCompactSpec(id, s); ok {
		return b, nil
	}
	full := *s
	full.V = VersionFull
	return json.Marshal(&full)
}

func encodeCompactSpec(id string, s *Spec) ([]byte, bool) {
	p := positions{prefix: id + "."}
	c := compactSpec{V: Version}
	for i, m := range s.Members {
		if n, ok := p.of(m.ID); !ok || n != i {
			return nil, false
		}
		if k := len(c.M) - 1; k >= 0 && c.M[k].Type == m.Type && c.M[k].Callback == m.Callback {
			c.M[k].N = max(c.M[k].N, 1) + 1
			continue
		}
		c.M = append(c.M, memberRun{Type: m.Type, Callback: m.Callback})
	}
	f, ok := p.appendShape(nil, s.Final)
	if !ok {
		return nil, false
	}
	c.Final = f
	c.Top = make([]json.RawMessage, len(s.Top))
	for i, t := range s.Top {
		b, ok := p.appendShape(nil, t)
		if !ok {
			return nil, false
		}
		c.Top[i] = b
	}
	b, err := json.Marshal(&c)
	return b, err == nil
}

// DecodeSpec decodes the stored spec of workflow id, in either format.
func DecodeSpec(id string, b []byte) (*Spec, error) {
	var v struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	switch v.V {
	case VersionFull:
		var s Spec
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return &s, nil
	case Version:
	default:
		return nil, fmt.Errorf("spec version %d is not one of this kiln (%d or %d)", v.V, VersionFull, Version)
	}
	var c compactSpec
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	p := positions{prefix: id + "."}
	s := &Spec{V: Version}
	total := 0
	for _, r := range c.M {
		n := max(r.N, 1)
		if n > maxCompactTasks || total+n > maxCompactTasks {
			return nil, errors.New("spec lists too many members")
		}
		total += n
	}
	s.Members = make([]Member, 0, total)
	for _, r := range c.M {
		for range max(r.N, 1) {
			s.Members = append(s.Members, Member{ID: p.prefix + strconv.Itoa(len(s.Members)), Type: r.Type, Callback: r.Callback})
		}
	}
	var err error
	if s.Final, err = p.decodeShape(c.Final, 0); err != nil {
		return nil, fmt.Errorf("spec: final: %w", err)
	}
	s.Top = make([]Shape, len(c.Top))
	for i, t := range c.Top {
		if s.Top[i], err = p.decodeShape(t, 0); err != nil {
			return nil, fmt.Errorf("spec: top %d: %w", i, err)
		}
	}
	return s, nil
}
