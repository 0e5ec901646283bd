//go:build !unix

package embedded

// isQuotaError reports whether err means the user's disk quota is used up.
func isQuotaError(error) bool { return false }
