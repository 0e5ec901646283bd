package embedded

import (
	"container/heap"
	"time"
)

// taskHeap is a binary heap of entries that tracks each entry's index, so an
// entry can be removed or fixed in O(log n). An entry is in at most one
// taskHeap at a time (a queue's ready window, a namespace's delayed window,
// or the heap of leases).
type taskHeap struct {
	items []*entry
	less  func(a, b *entry) bool
}

func (h *taskHeap) Len() int           { return len(h.items) }
func (h *taskHeap) Less(i, j int) bool { return h.less(h.items[i], h.items[j]) }
func (h *taskHeap) Swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.items[i].idx = i
	h.items[j].idx = j
}
func (h *taskHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(h.items)
	h.items = append(h.items, e)
}
func (h *taskHeap) Pop() any {
	n := len(h.items) - 1
	e := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	e.idx = -1
	return e
}

func (h *taskHeap) push(e *entry) { heap.Push(h, e) }
func (h *taskHeap) peek() *entry {
	if len(h.items) == 0 {
		return nil
	}
	return h.items[0]
}
func (h *taskHeap) pop() *entry { return heap.Pop(h).(*entry) }
func (h *taskHeap) remove(e *entry) {
	if h.holds(e) {
		heap.Remove(h, e.idx)
	}
}

func (h *taskHeap) holds(e *entry) bool {
	return e.idx >= 0 && e.idx < len(h.items) && h.items[e.idx] == e
}

// fix restores the order after e's key changed (pushing e if it is not
// in h).
func (h *taskHeap) fix(e *entry) {
	if h.holds(e) {
		heap.Fix(h, e.idx)
		return
	}
	h.push(e)
}

// leaseLess orders active tasks by the end of their lease.
func leaseLess(a, b *entry) bool { return a.t.LeaseExpiresAt.Before(b.t.LeaseExpiresAt) }

// readyLess orders pending tasks: higher priority first, then earlier RunAt,
// then enqueue order.
func readyLess(a, b *entry) bool {
	if a.t.Priority != b.t.Priority {
		return a.t.Priority > b.t.Priority
	}
	if !a.t.RunAt.Equal(b.t.RunAt) {
		return a.t.RunAt.Before(b.t.RunAt)
	}
	return a.seq < b.seq
}

// delayedLess orders scheduled and retry tasks by due time.
func delayedLess(a, b *entry) bool {
	if !a.t.RunAt.Equal(b.t.RunAt) {
		return a.t.RunAt.Before(b.t.RunAt)
	}
	return a.seq < b.seq
}

// timedItem is an element of a lazily cleaned time heap: it may be stale, and
// whoever pops it checks that it still describes the task.
type timedItem struct {
	at  time.Time
	ns  string
	id  string
	seq uint64
	e   *entry
}

type timeHeap []timedItem

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(timedItem)) }
func (h *timeHeap) Pop() any {
	old := *h
	n := len(old) - 1
	it := old[n]
	old[n] = timedItem{}
	*h = old[:n]
	return it
}
