//go:build race

package record

// raceOn says whether the tests run with the race detector, whose
// instrumentation changes what allocates.
const raceOn = true
