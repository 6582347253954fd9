package checkout

import (
	"sync/atomic"
	"time"
)

// heldCache remembers for a moment that a seat was seen held by another
// buyer, so a storm on one hot seat costs each pod a few Redis round trips
// per second instead of one per request. The price is bounded: for at most
// the memory window after the holder gave the seat up, this pod still says
// ticket_locked, which is what "someone else had it a moment ago" means.
//
// It is a direct-mapped table of lock-free slots: each packs a seat id
// (24 bits: the inventory is at most 10,000,000 < 2^24) and the end of its
// window (40 bits of milliseconds since the cache's creation). A hot seat
// is one atomic load per request; a collision only evicts, it can never
// make another seat look held.
type heldCache struct {
	window atomic.Int64 // nanoseconds; 0 disables the cache
	epoch  time.Time
	slots  [heldSlots]atomic.Uint64
}

const (
	heldSlots    = 4096
	heldIDShift  = 40
	heldTimeMask = 1<<heldIDShift - 1
)

func newHeldCache(window time.Duration) *heldCache {
	c := &heldCache{epoch: time.Now()}
	c.setWindow(window)
	return c
}

// setWindow changes the memory window for seats seen held from now on.
func (c *heldCache) setWindow(window time.Duration) { c.window.Store(int64(window)) }

func (c *heldCache) ms(t time.Time) uint64 {
	return uint64(t.Sub(c.epoch).Milliseconds()) & heldTimeMask
}

func (c *heldCache) slot(id int64) *atomic.Uint64 { return &c.slots[uint64(id)%heldSlots] }

// held reports whether id was seen held within the window before now.
func (c *heldCache) held(id int64, now time.Time) bool {
	if c.window.Load() <= 0 {
		return false
	}
	v := c.slot(id).Load()
	return v>>heldIDShift == uint64(id) && c.ms(now) < v&heldTimeMask
}

// remember records that id was seen held at now.
func (c *heldCache) remember(id int64, now time.Time) {
	if w := time.Duration(c.window.Load()); w > 0 {
		c.slot(id).Store(uint64(id)<<heldIDShift | c.ms(now.Add(w)))
	}
}

// forget drops id, e.g. when this pod learns the seat is sold.
func (c *heldCache) forget(id int64) {
	s := c.slot(id)
	if v := s.Load(); v>>heldIDShift == uint64(id) {
		s.CompareAndSwap(v, 0)
	}
}
