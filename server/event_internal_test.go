package server

import (
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/internal/wire"
)

// TestEventFromWire: Event has every field of the API's event, with the
// same JSON name, and eventFromWire copies each of them.
func TestEventFromWire(t *testing.T) {
	t.Parallel()
	wt, et := reflect.TypeFor[wire.Event](), reflect.TypeFor[Event]()
	if wt.NumField() != et.NumField() {
		t.Fatalf("wire.Event has %d fields, Event %d", wt.NumField(), et.NumField())
	}
	var in wire.Event
	v := reflect.ValueOf(&in).Elem()
	for i := range wt.NumField() {
		wf := wt.Field(i)
		ef, ok := et.FieldByName(wf.Name)
		if !ok || ef.Type != wf.Type || ef.Tag.Get("json") != wf.Tag.Get("json") {
			t.Errorf("field %s: Event has %v %q, want %v %q", wf.Name, ef.Type, ef.Tag.Get("json"), wf.Type, wf.Tag.Get("json"))
			continue
		}
		// A distinct non-zero value in every field.
		f := v.Field(i)
		switch wf.Type {
		case reflect.TypeFor[string]():
			f.SetString(wf.Name)
		case reflect.TypeFor[int]():
			f.SetInt(int64(i + 1))
		case reflect.TypeFor[uint64]():
			f.SetUint(uint64(i + 1))
		case reflect.TypeFor[time.Time]():
			f.Set(reflect.ValueOf(time.Unix(int64(i), 0)))
		default:
			t.Fatalf("field %s of type %v: teach this test to fill it", wf.Name, wf.Type)
		}
	}
	out := eventFromWire(in)
	ov := reflect.ValueOf(out)
	for i := range wt.NumField() {
		name := wt.Field(i).Name
		if !reflect.DeepEqual(ov.FieldByName(name).Interface(), v.Field(i).Interface()) {
			t.Errorf("field %s: got %v, want %v", name, ov.FieldByName(name), v.Field(i))
		}
	}
}
