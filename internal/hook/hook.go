// Package hook lets a package of kiln hand a function to the packages above
// it without making that function part of its public API. The lower package
// registers the function when it is initialised (an init function); the
// callers, which import it and so are initialised after it, call it through
// here.
//
// The functions are typed by the caller's type parameter and checked when
// called: calling one with a type other than the one registered, or one
// that was never registered, panics (a programmer error, caught by any test
// that takes the path).
package hook

import (
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/metrics"
	"github.com/kilnhq/kiln/store"
)

// taskInput is kiln's func(*kiln.TaskOptions, string, []byte, store.Limits,
// time.Time) (store.TaskInput, error).
var taskInput any

// SetTaskInput registers f, package kiln's conversion of a task's options
// into the store input that Client.Enqueue sends. Package kiln calls it.
func SetTaskInput[O any](f func(o *O, typ string, payload []byte, l store.Limits, now time.Time) (store.TaskInput, error)) {
	taskInput = f
}

// TaskInput turns the options of a task of type typ with payload into the
// store input that Client.Enqueue would send, with the same defaults and
// the same validation against l at time now; it returns every problem at
// once. The server and the scheduler use it so that a task they enqueue
// gets what a task enqueued in-process gets. O is kiln.TaskOptions.
func TaskInput[O any](o *O, typ string, payload []byte, l store.Limits, now time.Time) (store.TaskInput, error) {
	f, ok := taskInput.(func(*O, string, []byte, store.Limits, time.Time) (store.TaskInput, error))
	if !ok {
		panic(fmt.Sprintf("hook: no TaskInput registered for %T (package kiln registers it)", o))
	}
	return f(o, typ, payload, l, now)
}

// autoCreateProjects is server/api's func(*api.API).
var autoCreateProjects any

// SetAutoCreateProjects registers f, which makes an API create a project
// the first time an admin token names it. Package server/api calls it.
func SetAutoCreateProjects[A any](f func(a *A)) { autoCreateProjects = f }

// AutoCreateProjects makes a (an *api.API) create a project the first time
// an admin token names it in a URL. It is for kiln's own tests only: the
// store conformance suite, run through store/remote, invents namespaces.
// Call it before a serves its first request.
func AutoCreateProjects[A any](a *A) {
	f, ok := autoCreateProjects.(func(*A))
	if !ok {
		panic(fmt.Sprintf("hook: no AutoCreateProjects registered for %T (package server/api registers it)", a))
	}
	f(a)
}

// metricsSet is kiln's func(*kiln.Metrics) *metrics.Set.
var metricsSet any

// SetMetricsSet registers f, which returns the collectors of a
// kiln.Metrics. Package kiln calls it.
func SetMetricsSet[M any](f func(m *M) *metrics.Set) { metricsSet = f }

// MetricsSet returns the collectors of m (a *kiln.Metrics), or nil for a
// nil m: the packages that count what kiln counts (package resque) record
// into the Metrics their user gave them. M is kiln.Metrics.
func MetricsSet[M any](m *M) *metrics.Set {
	if m == nil {
		return nil
	}
	f, ok := metricsSet.(func(*M) *metrics.Set)
	if !ok {
		panic(fmt.Sprintf("hook: no MetricsSet registered for %T (package kiln registers it)", m))
	}
	return f(m)
}
