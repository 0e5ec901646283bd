// Package server is kiln's task server: it owns a store, serves the native
// HTTP API of docs/api.md (package server/api) on it, runs the sweeper,
// and lets remote workers take work after a challenge-response handshake.
//
// # Use
//
//	srv, err := server.New(&server.Config{Store: st, Addr: "127.0.0.1:7878"})
//	...
//	err = srv.Run(ctx) // serves until ctx is done, then shuts down gracefully
//
// Handler returns the http.Handler alone, for tests (httptest) and for
// embedding in another server.
//
// # Transport security
//
// With Config.TLSCertFile and Config.TLSKeyFile, Run and Serve speak TLS 1.2
// or later, and load the key pair again when its files change. Without
// them, on a listener that is not loopback, the worker routes answer 403
// tls_required unless Config.AllowInsecureWorkers (docs/api.md, "Transport
// security"). Handler applies neither: the server that serves it decides.
//
// # Projects and tokens
//
// Each project is a namespace of the store. The server's own records
// (projects, SHA-256 hashes of tokens, worker sessions and challenges) are
// kept in the store through the optional store.Meta ability, so every
// server that shares a store sees them; a store without it cannot serve.
// On the first start New creates the bootstrap project and an admin token
// (see Config.BootstrapProject and Config.BootstrapToken), prints them once
// to Config.Stdout and writes them to Config.CLIFile. Tokens and secrets
// never reach the log.
//
// # Shutdown
//
// Shutdown (and Run, when its context ends) stops accepting connections,
// ends long polls and event streams at once (a lease wait answers with no
// task), lets every other request finish, and stops the sweeper. No task
// is lost: a task leased by a request that was cut short stays leased and
// comes back when its lease expires.
package server
