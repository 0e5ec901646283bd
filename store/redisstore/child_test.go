package redisstore

// childMain runs a child process of a test instead of the tests, when the
// environment asks for one, and reports whether it did.
func childMain() bool { return false }
