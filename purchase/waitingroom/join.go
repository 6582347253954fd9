package waitingroom

import (
	"context"
	"errors"
	"time"

	"github.com/flux-order/flux-order/purchase/sale"
)

// errStaleView: the database has been unreachable for longer than the
// view may be trusted.
var errStaleView = errors.New("the queue view is missing or stale")

// Join enqueues buyer, or finds their place: the same buyer always gets the
// same queue id and place. The answer comes once the join committed.
func (q *Room) Join(ctx context.Context, buyer string) (Place, string, error) {
	wr := q.settings.Load()
	if !wr.On() {
		return Place{}, "", sale.ErrQueueNotFound
	}
	now := time.Now()
	switch {
	case !wr.JoinFrom.IsZero() && now.Before(wr.JoinFrom):
		return Place{}, "", &sale.RetryAfterError{Seconds: clampSeconds(wr.JoinFrom.Sub(now), 1, 3600), Err: sale.ErrSaleNotStarted}
	case q.schedule().Ended(now):
		return Place{}, "", sale.ErrSaleEnded
	}
	v, err := q.firstView(ctx, now)
	if err != nil {
		return Place{}, "", err
	}
	if v.available <= 0 {
		if v.held > 0 {
			// Every seat is sold or held: held seats may come back.
			return Place{}, "", &sale.RetryAfterError{Seconds: 5, Err: sale.ErrSoldOut}
		}
		return Place{}, "", sale.ErrSoldOut
	}
	// Longer than the batch's own bound: a 503 then means the batch failed
	// (or never started), not that it committed after the buyer gave up.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), q.joinTimeout+joinAnswerSlack)
	defer cancel()
	j, err := q.join(ctx, buyer)
	if err != nil {
		return Place{}, "", err
	}
	t := Ticket{Buyer: j.BuyerID, Seq: j.Seq, JoinedAt: j.JoinedAt}
	// A fresh view: the buyer may have been admitted while their join
	// waited for its batch. If it went stale meanwhile, the one checked
	// above still vouches for the place the buyer joined at.
	if fresh, err := q.currentView(time.Now()); err == nil {
		v = fresh
	}
	return q.standing(v, t, time.Now()), q.signer.QueueID(t), nil
}

// Poll answers from the queue id and the pod's view: no I/O.
func (q *Room) Poll(queueID string) (Place, error) {
	if !q.settings.Load().On() {
		return Place{}, sale.ErrQueueNotFound
	}
	t, err := q.signer.ParseQueueID(queueID)
	if err != nil || q.left.gone(t.Buyer, t.Seq) {
		return Place{}, sale.ErrQueueNotFound // a place its buyer left is no more
	}
	now := time.Now()
	v, err := q.currentView(now)
	if err != nil {
		return Place{}, err
	}
	return q.standing(v, t, now), nil
}

// firstViewWait is how long a join waits for the room's first view (the
// refresh loop makes it at once, in a few milliseconds, when the room
// starts or is switched on) rather than answering 503 to the buyers who
// come first.
const firstViewWait = 2 * time.Second

// firstView is currentView, except that while the room has never had a
// view it waits up to firstViewWait for the first one.
func (q *Room) firstView(ctx context.Context, now time.Time) (*queueView, error) {
	v, err := q.currentView(now)
	if err == nil || q.view.Load() != nil {
		return v, err
	}
	ctx, cancel := context.WithTimeout(ctx, firstViewWait)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, err
		case <-t.C:
			if v := q.view.Load(); v != nil {
				return q.currentView(time.Now())
			}
		}
	}
}

// Warm says the room can answer a join at once: it is off, or it has had a
// view. Once true it stays true (the pod's readiness: a pod that starts
// with the room on takes no buyers before its first view, but an outage
// later, shared by every pod, does not take the pods out of the Service).
func (q *Room) Warm() bool {
	if q.warm.Load() {
		return true
	}
	if !q.On() || q.view.Load() != nil {
		q.warm.Store(true)
		return true
	}
	return false
}

// currentView is the pod's view, unless it is missing or too old to vouch
// for (the database has been unreachable).
func (q *Room) currentView(now time.Time) (*queueView, error) {
	v := q.view.Load()
	if v == nil || now.Sub(v.at) > staleView {
		return nil, sale.Unavailable(sale.ErrDatabaseUnavailable, errStaleView)
	}
	return v, nil
}
