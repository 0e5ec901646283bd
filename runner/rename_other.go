//go:build !linux

package runner

import "os"

// renameNoReplace renames a directory to dst, failing if dst exists. Off
// Linux the check and the rename are two steps.
func renameNoReplace(src, dst string) error {
	if _, err := os.Lstat(dst); err == nil {
		return &os.LinkError{Op: "rename", Old: src, New: dst, Err: os.ErrExist}
	}
	return os.Rename(src, dst)
}
