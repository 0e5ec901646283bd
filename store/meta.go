package store

import (
	"context"
	"strings"
)

// Meta is an optional ability of a store, found by type assertion: small
// records kept beside the tasks of a namespace. The server keeps projects,
// API tokens (hashed) and remote worker sessions in it, so that every server
// sharing a store sees them. Values are opaque bytes; records do not expire
// on their own.
type Meta interface {
	// MetaGet reads one record.
	MetaGet(ctx context.Context, p MetaGetParams) (MetaGetResult, error)
	// MetaPut writes one record; with IfAbsent it writes only when the key
	// is free and reports whether it wrote.
	MetaPut(ctx context.Context, p MetaPutParams) (MetaPutResult, error)
	// MetaDelete deletes one record; with IfValue it deletes only when the
	// record holds exactly that value (compare-and-delete, for single-use
	// records) and reports whether it deleted.
	MetaDelete(ctx context.Context, p MetaDeleteParams) (MetaDeleteResult, error)
	// MetaList returns the records whose keys start with Prefix, in key
	// order.
	MetaList(ctx context.Context, p MetaListParams) (MetaListResult, error)
}

// MaxMetaKeyLen and MaxMetaValueLen bound meta records.
const (
	MaxMetaKeyLen   = 1024
	MaxMetaValueLen = 64 << 10
)

// MetaGetParams is the input of MetaGet.
type MetaGetParams struct {
	Namespace string
	Key       string
}

// MetaGetResult is the output of MetaGet.
type MetaGetResult struct {
	Value []byte
	Found bool
}

// MetaPutParams is the input of MetaPut.
type MetaPutParams struct {
	Namespace string
	Key       string
	Value     []byte
	IfAbsent  bool
}

// MetaPutResult is the output of MetaPut.
type MetaPutResult struct {
	Stored bool
}

// MetaDeleteParams is the input of MetaDelete.
type MetaDeleteParams struct {
	Namespace string
	Key       string
	// IfValue, when not nil, makes the delete conditional.
	IfValue []byte
}

// MetaDeleteResult is the output of MetaDelete.
type MetaDeleteResult struct {
	Deleted bool
}

// MetaListParams is the input of MetaList.
type MetaListParams struct {
	Namespace string
	Prefix    string
}

// MetaListResult is the output of MetaList.
type MetaListResult struct {
	Items []MetaItem
}

// MetaItem is one meta record.
type MetaItem struct {
	Key   string
	Value []byte
}

// CheckMetaKey validates a namespace and a meta key: 1..MaxMetaKeyLen bytes
// without NUL.
func CheckMetaKey(ns, key string) error {
	if err := CheckNamespace(ns); err != nil {
		return err
	}
	if key == "" || len(key) > MaxMetaKeyLen || strings.IndexByte(key, 0) >= 0 {
		return invalid(ErrInvalidName, "key", "meta keys are 1-%d bytes without NUL", MaxMetaKeyLen)
	}
	return nil
}

// CheckMetaValue validates a meta value's size.
func CheckMetaValue(v []byte) error {
	if len(v) > MaxMetaValueLen {
		return invalid(ErrPayloadTooLarge, "value", "%d bytes is more than %d", len(v), MaxMetaValueLen)
	}
	return nil
}
