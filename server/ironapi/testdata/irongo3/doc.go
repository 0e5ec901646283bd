// Package irongo3 is an acceptance test of kiln's IronWorker API with the
// official Go client, github.com/iron-io/iron_go3. It is a module of its
// own so that the client never becomes a dependency of kiln; `make test`
// runs it (cd server/ironapi/testdata/irongo3 && go test -race ./...).
package irongo3
