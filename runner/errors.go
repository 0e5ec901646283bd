package runner

import (
	"errors"
	"fmt"
)

// Errors of Unpack. Every error Unpack returns for a hostile or broken archive
// wraps exactly one of these (test with errors.Is); an HTTP layer answers all
// of them with 400 and the error text, which names the entry and the reason.
// Other errors (a full disk, a dst that already exists) are the server's
// problem, not the uploader's.
var (
	// ErrNotZip: the data is not a readable zip archive.
	ErrNotZip = errors.New("runner: not a zip archive")
	// ErrEmpty: the archive holds no regular file.
	ErrEmpty = errors.New("runner: archive has no files")
	// ErrUnsafePath: an entry name that is not a plain relative path: empty,
	// absolute, a drive or UNC path, a "." or ".." element, a backslash, a NUL
	// or other control character, invalid UTF-8, or too long.
	ErrUnsafePath = errors.New("runner: unsafe path")
	// ErrDuplicate: two entries with the same name after cleaning, names that
	// differ only in letter case, or a file used as a directory by another entry.
	ErrDuplicate = errors.New("runner: duplicate path")
	// ErrLinkEntry: a symbolic link entry (zip has no hard-link entry; two
	// entries sharing data are ErrMalformed).
	ErrLinkEntry = errors.New("runner: link entry")
	// ErrSpecialFile: a device, FIFO, socket or other non-regular entry.
	ErrSpecialFile = errors.New("runner: special file entry")
	// ErrTooLarge: an entry or the whole archive is larger than Limits allow,
	// by its header or by the bytes it actually produced.
	ErrTooLarge = errors.New("runner: too large")
	// ErrTooManyFiles: more entries than Limits.MaxFiles.
	ErrTooManyFiles = errors.New("runner: too many files")
	// ErrRatio: an entry decompresses to more than Limits.MaxRatio times the
	// compressed bytes it has consumed (a zip bomb).
	ErrRatio = errors.New("runner: compression ratio too high")
	// ErrMalformed: an archive that lies or that kiln does not support: a
	// checksum or size that does not match the data, entries whose data
	// overlap, data beyond the end, encryption, a compression method other
	// than store and deflate, a directory entry with data.
	ErrMalformed = errors.New("runner: malformed archive")
)

// EntryError is the error Unpack returns for a rejected entry. Err wraps one
// of the sentinel errors above.
type EntryError struct {
	// Name is the entry's name as the archive spells it (it may hold control
	// characters: Error quotes it).
	Name string
	// Err says what is wrong; errors.Is(Err, ErrUnsafePath) and so on.
	Err error
}

// Error returns the reason followed by the quoted entry name (its first
// 128 bytes if it is longer).
func (e *EntryError) Error() string {
	if len(e.Name) > 128 {
		return fmt.Sprintf("%v (entry %q...)", e.Err, e.Name[:128])
	}
	return fmt.Sprintf("%v (entry %q)", e.Err, e.Name)
}

// Unwrap returns Err.
func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(name string, sentinel error, format string, args ...any) error {
	return &EntryError{Name: name, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
}

// Errors of Run. A non-nil error from Run means the task could not be
// started; it wraps one of these. Once the program has started, Run returns a
// nil error and the Result says how it ended.
var (
	// ErrInvalidSpec: the Spec or Config is incomplete or unsafe.
	ErrInvalidSpec = errors.New("runner: invalid spec")
	// ErrNoProgram: the program or interpreter to run does not exist.
	ErrNoProgram = errors.New("runner: program not found")
	// ErrStart: the process could not be started (exec failed: not
	// executable, wrong architecture, a limit could not be applied, ...).
	ErrStart = errors.New("runner: start failed")
	// ErrNoTrampoline: the binary that applies the limits (by default the
	// running binary) does not call Main first thing in main.
	ErrNoTrampoline = errors.New("runner: the trampoline is not set up: call runner.Main at the start of main")
	// ErrSandbox: the sandbox that Config.Sandbox asks for cannot work on
	// this machine (New), or bwrap failed to set up a task's sandbox (Run).
	ErrSandbox = errors.New("runner: sandbox unavailable")
)
