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
// When the window ends, one request asks Redis, not every request in
// flight: the first caller to find it over claims the next ask (one CAS)
// and is told "not held"; the others keep answering from memory until its
// answer renews the window, finds the seat sold or under a checkout hold,
// or takes the seat (checkout's taken), or, should Redis not answer, one
// more window ends. Without the claim a storm of 60k requests/s sent
// 5-8 % of them to Redis at each window's end, all at once. So the pod says
// ticket_locked for at most one window after the holder gave the seat up,
// and two when Redis fails the refreshing request in between.
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

// held reports whether id was seen held within the window before now. Past
// the window, the one caller that claims the refresh gets false (it asks
// Redis, whose answer remember or forget records); callers meanwhile get
// true until the claim's own window ends.
func (c *heldCache) held(id int64, now time.Time) bool {
	w := c.window.Load()
	if w <= 0 {
		return false
	}
	s := c.slot(id)
	v := s.Load()
	if v>>heldIDShift != uint64(id) {
		return false
	}
	if c.ms(now) < v&heldTimeMask {
		return true
	}
	return !s.CompareAndSwap(v, uint64(id)<<heldIDShift|c.ms(now.Add(time.Duration(w))))
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
