package purchase

import (
	"sync"
	"time"
)

// heldCache remembers for a moment that a seat was seen held by another
// buyer, so a storm on one hot seat costs each pod a few Redis round trips
// per second instead of one per request. The price is bounded: for at most
// the memory window after the holder gave the seat up, this pod still says
// ticket_locked, which is what "someone else had it a moment ago" means.
type heldCache struct {
	window time.Duration
	shards [64]heldShard
}

type heldShard struct {
	mu    sync.Mutex
	until map[int64]int64 // ticket -> unix nanoseconds
}

// maxHeldPerShard bounds memory: a shard that grows past it drops its
// expired entries, or everything if none expired.
const maxHeldPerShard = 4096

func newHeldCache(window time.Duration) *heldCache {
	c := &heldCache{window: window}
	for i := range c.shards {
		c.shards[i].until = map[int64]int64{}
	}
	return c
}

func (c *heldCache) shard(id int64) *heldShard { return &c.shards[uint64(id)%uint64(len(c.shards))] }

// held reports whether id was seen held within the window before now.
func (c *heldCache) held(id int64, now time.Time) bool {
	if c.window <= 0 {
		return false
	}
	s := c.shard(id)
	s.mu.Lock()
	until, ok := s.until[id]
	s.mu.Unlock()
	return ok && now.UnixNano() < until
}

// remember records that id was seen held at now.
func (c *heldCache) remember(id int64, now time.Time) {
	if c.window <= 0 {
		return
	}
	n := now.UnixNano()
	s := c.shard(id)
	s.mu.Lock()
	if len(s.until) >= maxHeldPerShard {
		for k, u := range s.until {
			if u <= n {
				delete(s.until, k)
			}
		}
		if len(s.until) >= maxHeldPerShard {
			clear(s.until) // only a cache: forgetting costs a Redis round trip
		}
	}
	s.until[id] = n + int64(c.window)
	s.mu.Unlock()
}

// forget drops id, e.g. when this pod learns the seat is sold or free.
func (c *heldCache) forget(id int64) {
	s := c.shard(id)
	s.mu.Lock()
	delete(s.until, id)
	s.mu.Unlock()
}
