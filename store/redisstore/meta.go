package redisstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/kilnhq/kiln/store"
)

var _ store.Meta = (*Store)(nil)

// Meta records of a namespace live in two keys under its hash tag T, so that
// they share the namespace's slot on a Redis Cluster:
//
//	T:mv  hash  key -> value (the records; MetaGet reads it directly)
//	T:mk  zset  every key, score 0, for MetaList in key order (ZRANGEBYLEX)
//
// Every write changes both in one script, so they never disagree.

// metaPutScript writes ARGV[2] under key ARGV[1]; with ARGV[3] == "1" only
// when the key is free, with ARGV[3] == "2" only when it holds exactly
// ARGV[4] (compare-and-set). It returns 1 when it wrote, 0 otherwise.
var metaPutScript = redis.NewScript(`
local T = KEYS[1]
if ARGV[3] == '1' and redis.call('HEXISTS', T .. ':mv', ARGV[1]) == 1 then return 0 end
if ARGV[3] == '2' and redis.call('HGET', T .. ':mv', ARGV[1]) ~= ARGV[4] then return 0 end
redis.call('HSET', T .. ':mv', ARGV[1], ARGV[2])
redis.call('ZADD', T .. ':mk', 0, ARGV[1])
return 1
`)

// metaDeleteScript deletes key ARGV[1]; with ARGV[2] == "1" only when it
// holds exactly ARGV[3] (compare-and-delete). It returns 1 when it deleted.
var metaDeleteScript = redis.NewScript(`
local T = KEYS[1]
local v = redis.call('HGET', T .. ':mv', ARGV[1])
if not v then return 0 end
if ARGV[2] == '1' and v ~= ARGV[3] then return 0 end
redis.call('HDEL', T .. ':mv', ARGV[1])
redis.call('ZREM', T .. ':mk', ARGV[1])
return 1
`)

// metaListScript returns {key, value, key, value...} of the keys between the
// ZRANGEBYLEX bounds ARGV[1] and ARGV[2], in key order, read at one instant.
var metaListScript = redis.NewScript(`
local T = KEYS[1]
local ks = redis.call('ZRANGEBYLEX', T .. ':mk', ARGV[1], ARGV[2])
local out = {}
for i = 1, #ks, 1000 do
  local vs = redis.call('HMGET', T .. ':mv', unpack(ks, i, math.min(i + 999, #ks)))
  for j = 1, #vs do
    out[#out + 1] = ks[i + j - 1]
    out[#out + 1] = vs[j] or ''
  end
end
return out
`)

var metaScripts = []*redis.Script{metaPutScript, metaDeleteScript, metaListScript}

// metaBegin checks what every meta call checks.
func (s *Store) metaBegin(ctx context.Context, op, ns, key string) error {
	if err := store.CheckMetaKey(ns, key); err != nil {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	return s.usable(ctx)
}

// MetaGet implements store.Meta with one HGET.
func (s *Store) MetaGet(ctx context.Context, p store.MetaGetParams) (store.MetaGetResult, error) {
	if err := s.metaBegin(ctx, "meta get", p.Namespace, p.Key); err != nil {
		return store.MetaGetResult{}, err
	}
	v, err := s.rdb.HGet(ctx, s.tag(p.Namespace)+":mv", p.Key).Result()
	if errors.Is(err, redis.Nil) {
		return store.MetaGetResult{}, nil
	}
	if err != nil {
		return store.MetaGetResult{}, s.wrap("meta get", err)
	}
	return store.MetaGetResult{Value: []byte(v), Found: true}, nil
}

// MetaPut implements store.Meta: one script writes the record and its key
// index, after checking that the key is free (IfAbsent) or holds IfValue.
// Both keys share the namespace's hash tag, so the check and the write are
// one atomic step on a Redis Cluster too.
func (s *Store) MetaPut(ctx context.Context, p store.MetaPutParams) (store.MetaPutResult, error) {
	if err := store.CheckMetaPut(p); err != nil {
		return store.MetaPutResult{}, fmt.Errorf("redisstore: meta put: %w", err)
	}
	if err := s.usable(ctx); err != nil {
		return store.MetaPutResult{}, err
	}
	cond := "0"
	switch {
	case p.IfAbsent:
		cond = "1"
	case p.IfValue != nil:
		cond = "2"
	}
	v, err := s.run(ctx, "meta put", metaPutScript, p.Namespace, true, []any{p.Key, p.Value, cond, p.IfValue})
	if err != nil {
		return store.MetaPutResult{}, err
	}
	n, _ := v.(int64)
	return store.MetaPutResult{Stored: n == 1}, nil
}

// MetaDelete implements store.Meta: one script compares (with IfValue) and
// deletes the record and its key index.
func (s *Store) MetaDelete(ctx context.Context, p store.MetaDeleteParams) (store.MetaDeleteResult, error) {
	if err := s.metaBegin(ctx, "meta delete", p.Namespace, p.Key); err != nil {
		return store.MetaDeleteResult{}, err
	}
	cmp := "0"
	if p.IfValue != nil {
		cmp = "1"
	}
	v, err := s.run(ctx, "meta delete", metaDeleteScript, p.Namespace, true, []any{p.Key, cmp, p.IfValue})
	if err != nil {
		return store.MetaDeleteResult{}, err
	}
	n, _ := v.(int64)
	return store.MetaDeleteResult{Deleted: n == 1}, nil
}

// MetaList implements store.Meta: the keys of the prefix's range of the key
// index, in byte order, with their values, read by one script.
func (s *Store) MetaList(ctx context.Context, p store.MetaListParams) (store.MetaListResult, error) {
	if err := store.CheckNamespace(p.Namespace); err != nil {
		return store.MetaListResult{}, fmt.Errorf("redisstore: meta list: %w", err)
	}
	if err := s.usable(ctx); err != nil {
		return store.MetaListResult{}, err
	}
	lo, hi := lexRange(p.Prefix)
	v, err := s.run(ctx, "meta list", metaListScript, p.Namespace, false, []any{lo, hi})
	if err != nil {
		return store.MetaListResult{}, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return store.MetaListResult{}, fmt.Errorf("redisstore: meta list: unexpected script reply %T", v)
	}
	var items []store.MetaItem
	for i := 0; i < len(arr); i += 2 {
		k, _ := arr[i].(string)
		val, _ := arr[i+1].(string)
		items = append(items, store.MetaItem{Key: k, Value: []byte(val)})
	}
	return store.MetaListResult{Items: items}, nil
}

// lexRange returns the ZRANGEBYLEX bounds of the keys that start with
// prefix: from the prefix itself (inclusive) to the first string after every
// such key (exclusive), which is the prefix without its trailing 0xff bytes
// and its last byte incremented; "+" when there is none.
func lexRange(prefix string) (lo, hi string) {
	if prefix == "" {
		return "-", "+"
	}
	b := []byte(prefix)
	for len(b) > 0 && b[len(b)-1] == 0xff {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "[" + prefix, "+"
	}
	b[len(b)-1]++
	return "[" + prefix, "(" + string(b)
}
