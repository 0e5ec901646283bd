//go:build unix

package embedded

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lockFileName is the file in the data folder that the open store holds an
// exclusive lock on, and that names the process holding it.
const lockFileName = "kiln.lock"

// folderLock is the lock of a data folder, held while a Store has it open.
type folderLock struct {
	f  *os.File
	id fileID
}

// fileID identifies a lock file whatever the path it was opened by.
type fileID struct{ dev, ino uint64 }

// heldFolders holds the lock files this process has locked. A flock is
// tied to the open file description, and a process that forks (to start
// any program) gives the child a copy of every descriptor until the
// child's exec closes it: a lock released by Close while such a copy
// exists stays held for that moment. So when the lock is taken but this
// process holds none on the file, Open tries again for lockRetryFor
// instead of reporting a second Open in the same process. (unlock now
// releases the lock explicitly, in every copy at once; the retry stays
// for a lock released in any other way.)
var heldFolders struct {
	sync.Mutex
	ids map[fileID]bool
}

// lockRetryFor is how long Open waits for a lock held only by a fork's
// copy of a closed descriptor (see heldFolders).
const lockRetryFor = 2 * time.Second

// lockFolder takes the data folder's lock, or says which process holds it.
// The lock is tied to the open file, so a second Open in the same process
// is refused too.
func lockFolder(dir string) (*folderLock, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600) //nolint:gosec // G304: a fixed name in the operator's data folder
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("embedded: open %s: stat %s: %w", dir, lockFileName, err)
	}
	id := fileID{dev: uint64(st.Dev), ino: st.Ino} //nolint:unconvert // Dev's type varies by platform
	for deadline := time.Now().Add(lockRetryFor); ; {
		heldFolders.Lock()
		held := heldFolders.ids[id]
		if !held {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				if heldFolders.ids == nil {
					heldFolders.ids = make(map[fileID]bool)
				}
				heldFolders.ids[id] = true
			}
		}
		heldFolders.Unlock()
		if err == nil && !held {
			break
		}
		b, _ := os.ReadFile(path) //nolint:gosec // G304: as above
		pid := strings.TrimSpace(string(b))
		if held {
			_ = f.Close()
			return nil, inUseError(dir, pid)
		}
		busy := errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN)
		if busy && pid == strconv.Itoa(os.Getpid()) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // a fork's copy of a descriptor this process closed
			continue
		}
		_ = f.Close()
		if busy {
			return nil, inUseError(dir, pid)
		}
		return nil, fmt.Errorf("embedded: open %s: lock %s: %w", dir, lockFileName, err)
	}
	// The pid is for people: the lock, not the file's content, decides.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &folderLock{f: f, id: id}, nil
}

// unlock releases the lock. The file stays, so that another process
// waiting to lock it never locks a file that is about to be removed.
func (l *folderLock) unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	heldFolders.Lock()
	delete(heldFolders.ids, l.id)
	heldFolders.Unlock()
	// An explicit unlock first: closing releases the lock only once every
	// descriptor of the open file is closed, and a child this process
	// forked keeps a copy until its exec; LOCK_UN releases it for all of
	// them, so another process may open the folder at once.
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	err := l.f.Close()
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
