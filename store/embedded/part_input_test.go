package embedded

import (
	"reflect"
	"testing"
	"time"

	"github.com/kilnhq/kiln/store"
)

// TestSameInputEveryField checks that sameInput compares every field of a
// task input but its id: two inputs that differ in any other field are not
// the same (a field added to store.TaskInput and not compared would make a
// flow's part share one task's value with another).
func TestSameInputEveryField(t *testing.T) {
	t.Parallel()
	base := store.TaskInput{ID: "a", Type: "t"}
	other := base
	other.ID = "b"
	if !sameInput(&base, &other) {
		t.Fatal("inputs differing in their id only are not the same")
	}
	typ := reflect.TypeFor[store.TaskInput]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if f.Name == "ID" {
			continue
		}
		c := base
		v := reflect.ValueOf(&c).Elem().Field(i)
		switch v.Interface().(type) {
		case string:
			v.SetString("x")
		case []byte:
			v.SetBytes([]byte("x"))
		case int:
			v.SetInt(1)
		case bool:
			v.SetBool(true)
		case time.Duration:
			v.SetInt(int64(time.Second))
		case time.Time:
			v.Set(reflect.ValueOf(time.Unix(1, 0)))
		default:
			t.Fatalf("field %s of type %s: teach this test to change it", f.Name, f.Type)
		}
		if sameInput(&base, &c) {
			t.Errorf("inputs differing in %s are the same", f.Name)
		}
	}
}
