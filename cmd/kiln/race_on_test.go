//go:build race

package main

// raceOn says whether the tests run with the race detector: a binary the
// tests build takes the same flag, so the go command reuses the packages it
// compiled for the test instead of compiling them all again.
const raceOn = true
