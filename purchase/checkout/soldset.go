package checkout

import "sync/atomic"

// soldSet is this pod's memory of seats known to be sold. A seat once seen
// sold (confirmed here, refused by Postgres, or marked in Redis) is refused
// again without any I/O: a hot-seat storm after the sale costs the pod a
// bit test per request. Only a cancellation (cancel.go) makes a seat
// unsold again, and every pod hears of it (remove).
type soldSet struct {
	words []atomic.Uint64
}

func newSoldSet(tickets int64) *soldSet {
	return &soldSet{words: make([]atomic.Uint64, tickets/64+1)}
}

// has and add ignore seats beyond the pod's inventory (seeded by a newer
// pod while this one still runs): remembering is only an optimisation.
func (s *soldSet) has(id int64) bool {
	w := id / 64
	return w < int64(len(s.words)) && s.words[w].Load()&(1<<(uint64(id)%64)) != 0
}

func (s *soldSet) add(id int64) {
	if w := id / 64; w < int64(len(s.words)) {
		s.words[w].Or(1 << (uint64(id) % 64))
	}
}

func (s *soldSet) remove(id int64) {
	if w := id / 64; w < int64(len(s.words)) {
		s.words[w].And(^uint64(1 << (uint64(id) % 64)))
	}
}
