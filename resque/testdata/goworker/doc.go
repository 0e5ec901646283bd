// Package goworker is an interoperability test of kiln's Resque producer
// with goworker (github.com/benmanns/goworker), a Resque worker written in
// Go: goworker runs the jobs kiln's resque.Client enqueues and the delayed
// jobs kiln's scheduler moves. It is a module of its own so that goworker
// never becomes a dependency of kiln; `make test` runs it
// (cd resque/testdata/goworker && go test -race ./...).
package goworker
