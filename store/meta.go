package store

import (
	"context"
	"errors"
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
	// is free, with IfValue only when the record holds exactly that value
	// (compare-and-set, for read-modify-write loops), and reports whether
	// it wrote.
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

// MetaPutParams is the input of MetaPut. IfAbsent and IfValue exclude
// each other (ErrInvalidOption).
type MetaPutParams struct {
	Namespace string
	Key       string
	Value     []byte
	// IfAbsent makes the write conditional on the key being free.
	IfAbsent bool
	// IfValue, when not nil, makes the write conditional on the record
	// existing and holding exactly these bytes at the instant of the write
	// (compare-and-set): of several writers that read the same value, at
	// most one stores. An empty, non-nil IfValue matches a record whose
	// value is empty.
	IfValue []byte
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

// CheckMetaPut validates the input of MetaPut: key, value size, and that
// IfAbsent and IfValue are not both set.
func CheckMetaPut(p MetaPutParams) error {
	var errs []error
	if err := CheckMetaKey(p.Namespace, p.Key); err != nil {
		errs = append(errs, err)
	}
	if err := CheckMetaValue(p.Value); err != nil {
		errs = append(errs, err)
	}
	if p.IfAbsent && p.IfValue != nil {
		errs = append(errs, invalid(ErrInvalidOption, "if_value", "IfAbsent and IfValue exclude each other"))
	}
	return errors.Join(errs...)
}

// CheckMetaValue validates a meta value's size.
func CheckMetaValue(v []byte) error {
	if len(v) > MaxMetaValueLen {
		return invalid(ErrPayloadTooLarge, "value", "%d bytes is more than %d", len(v), MaxMetaValueLen)
	}
	return nil
}
