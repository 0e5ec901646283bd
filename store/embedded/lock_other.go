//go:build !unix

package embedded

// folderLock is a no-op where file locks are not taken by the store itself;
// the engine's own lock still refuses a second Open.
type folderLock struct{}

func lockFolder(string) (*folderLock, error) { return &folderLock{}, nil }

func (*folderLock) unlock() error { return nil }
