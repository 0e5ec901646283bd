//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFileName is the file in the data folder that the open store holds an
// exclusive lock on, and that names the process holding it.
const lockFileName = "kiln.lock"

// folderLock is the lock of a data folder, held while a Store has it open.
type folderLock struct{ f *os.File }

// lockFolder takes the data folder's lock, or says which process holds it.
// The lock is tied to the open file, so a second Open in the same process
// is refused too.
func lockFolder(dir string) (*folderLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // G304: a fixed name in the operator's data folder
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path) //nolint:gosec // G304: as above
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) {
			return nil, inUseError(dir, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("embedded: open %s: lock %s: %w", dir, lockFileName, err)
	}
	// The pid is for people: the lock, not the file's content, decides.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &folderLock{f: f}, nil
}

// unlock releases the lock. The file stays, so that another process
// waiting to lock it never locks a file that is about to be removed.
func (l *folderLock) unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the file releases the lock
	l.f = nil
	return err
}

// inUseError says that another process (or this one) has the data folder
// dir open; pid is what the lock file says, possibly empty.
func inUseError(dir, pid string) error {
	who := "another process"
	if _, err := strconv.Atoi(pid); err == nil {
		if pid == strconv.Itoa(os.Getpid()) {
			who = "this process (pid " + pid + "; close the other Store first)"
		} else {
			who = "another process (pid " + pid + ")"
		}
	}
	return fmt.Errorf("embedded: open %s: the data folder %s is in use by %s: %w", dir, dir, who, ErrInUse)
}
