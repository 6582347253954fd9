package waitingroom

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// Leaving the line (issue 17): DELETE /v1/queue/{queueId}. The queue id is
// the capability: whoever holds it may give the place (or the pass) up.
//
// The leave is written to Postgres (orderstore.LeaveQueue): the buyer's
// row goes, so the admitter passes over their slot; an admitted buyer's
// admission goes too, and if it counted as active the admitter takes it
// off at its next step and lets the next buyer in. Every pod learns of the
// leave at its next refresh (queue_left), the pod that served it at once:
// a poll of the old queue id then answers queue_not_found, and the old pass
// buys nothing (a pass granted after the leave, to a buyer who joined
// again, does).

// Leave takes the queue id's buyer out of the line. Leaving twice, or with
// the queue id of a place the buyer has since left and joined again, is
// not an error: the place is gone either way. A non-empty buyer (the
// identity token's subject) must be the queue id's: another buyer's queue
// id answers queue_not_found, as if there were none.
func (q *Room) Leave(ctx context.Context, queueID, buyer string) error {
	wr := q.settings.Load()
	if !wr.On() {
		return sale.ErrQueueNotFound
	}
	t, err := q.signer.ParseQueueID(queueID)
	if err != nil || (buyer != "" && t.Buyer != buyer) {
		return sale.ErrQueueNotFound
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), joinTimeout)
	defer cancel()
	if _, err := q.store.LeaveQueue(ctx, t.Buyer, t.Seq, wr.passTTL()); err != nil {
		return sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	q.left.add(t.Buyer, t.Seq, now)
	return nil
}

// leavers is what a pod knows of the buyers who left: per buyer, the seq
// they left with (their last leave) and when.
type leavers struct {
	mu     sync.RWMutex
	last   int64 // id of the newest queue_left row read
	buyers map[string]leave
}

type leave struct {
	seq int64
	at  time.Time
}

// maxLeftPerRefresh bounds one read of queue_left.
const maxLeftPerRefresh = 10_000

// load reads the leaves after the last one read.
func (l *leavers) load(ctx context.Context, store Store) error {
	l.mu.RLock()
	after := l.last
	l.mu.RUnlock()
	for {
		rows, err := store.QueueLeft(ctx, after, maxLeftPerRefresh)
		if err != nil {
			return fmt.Errorf("read who left the queue: %w", err)
		}
		for _, r := range rows {
			l.add(r.Buyer, r.Seq, r.LeftAt)
			after = r.ID
		}
		l.mu.Lock()
		l.last = max(l.last, after)
		l.mu.Unlock()
		if len(rows) < maxLeftPerRefresh {
			return nil
		}
	}
}

func (l *leavers) add(buyer string, seq int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buyers == nil {
		l.buyers = map[string]leave{}
	}
	if old, ok := l.buyers[buyer]; !ok || seq >= old.seq {
		l.buyers[buyer] = leave{seq: seq, at: at}
	}
}

// gone says whether the buyer left the place of seq.
func (l *leavers) gone(buyer string, seq int64) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	lv, ok := l.buyers[buyer]
	return ok && seq <= lv.seq
}

// passVoid says whether a pass of buyer expiring at expires was granted
// before they left (admitted at expires - passTTL).
func (l *leavers) passVoid(buyer string, expires time.Time, passTTL time.Duration) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	lv, ok := l.buyers[buyer]
	return ok && !expires.Add(-passTTL).After(lv.at)
}
