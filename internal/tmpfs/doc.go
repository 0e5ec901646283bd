// Package tmpfs gives tests a small file system of their own, to fill up:
// Mount mounts a tmpfs of a given size on a temporary folder (Linux, as
// root), and Fill takes all of its free space.
//
// Tests that need one call Mount, which skips the test, with the reason,
// where it cannot mount (not Linux, not root), or fails it there when
// KILN_TEST_REQUIRE_ALL=1.
package tmpfs
