package checkout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Order cancellation (issue 19): the platform cancels an order whose payment
// failed, was refunded or charged back, and the seat is on sale again at
// once on every pod.
//
//  1. Postgres (cancel_order, one transaction): the order moves to the
//     audit table, the seat is unsold (and the seat feed sees it), the
//     buyer's count and the sold counter drop, order.cancelled is written.
//  2. The cancelling pod forgets the seat and the buyer (applyLocal),
//     removes the seat's sold marker in Redis if it still names the order
//     and puts the seat back in the any-seat pool (Unsell), then publishes
//     the cancellation on the sale's channel.
//  3. Every pod subscribed applies it to its memories at once; every pod
//     also polls Postgres each CancelPollInterval for cancellations it
//     missed (a Redis restart, a gap in its subscription), and re-applies
//     those of the last CancelReapplyWindow, memory and Redis both.
//
// The re-application closes a race: a purchase refused by the fence before
// the cancel committed may write "sold" (its pod's memory, Redis's marker)
// after the cancel cleared them. Such a write comes at most Timeout +
// sideEffectTimeout after its refusal, well inside the window, and the next
// poll undoes it (the marker only while it names the cancelled order: a
// resale's marker stays).

// Cancellation is a cancelled order, its author, time and reason.
type Cancellation = orderstore.Cancellation

const (
	// CancelPollInterval is how often every pod reads the cancellations it
	// may have missed.
	CancelPollInterval = time.Second
	// CancelReapplyWindow is how long each cancellation is re-applied by
	// every poll.
	CancelReapplyWindow = 30 * time.Second
)

// cancelMessage is what the cancelling pod publishes.
type cancelMessage struct {
	OrderID  uuid.UUID `json:"orderId"`
	TicketID int64     `json:"ticketId"`
	BuyerID  string    `json:"buyerId"`
}

// Cancel cancels order id, by and for reason (both kept in the audit).
// first is false for a repeat, which answers the first cancellation and
// changes nothing in Postgres (its memories and Redis are cleared again:
// harmless, and it repairs a first call whose Redis write failed).
// sale.ErrOrderNotFound when there is no such order; sale.ErrOrderPending
// (with Retry-After) while an order of that id may still commit.
func (s *Service) Cancel(ctx context.Context, id uuid.UUID, by, reason string) (c Cancellation, first bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	c, first, err = s.store.CancelOrder(ctx, id, by, reason)
	if errors.Is(err, orderstore.ErrNotFound) {
		// Not yet, perhaps: the same rule as GET /v1/orders/{id}.
		_, oerr := s.Order(ctx, id)
		if errors.Is(oerr, sale.ErrOrderPending) || errors.Is(oerr, sale.ErrUnavailable) {
			return Cancellation{}, false, oerr
		}
		if !errors.Is(oerr, sale.ErrOrderNotFound) {
			// It committed (or was cancelled by another call) between the
			// two reads: cancel again rather than answer a final 404.
			c, first, err = s.store.CancelOrder(ctx, id, by, reason)
		}
	}
	switch {
	case errors.Is(err, orderstore.ErrNotFound):
		return Cancellation{}, false, sale.ErrOrderNotFound
	case err != nil:
		return Cancellation{}, false, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	if first {
		s.metrics.cancelled.Inc()
	}
	s.applyLocal(c.OrderID, c.TicketID, c.BuyerID)
	if _, err := s.locks.Unsell(ctx, []seatlock.SoldSeat{{ID: c.TicketID, OrderID: c.OrderID.String()}}); err != nil {
		// The pods' poll retries it within a second.
		s.log.Warn("could not clear a cancelled seat's marker in redis; the next poll retries", "ticket", c.TicketID, "err", err)
	}
	msg, _ := json.Marshal(cancelMessage{OrderID: c.OrderID, TicketID: c.TicketID, BuyerID: c.BuyerID})
	if err := s.locks.Announce(ctx, string(msg)); err != nil {
		s.log.Warn("could not announce a cancellation; the other pods learn it from their poll", "order", c.OrderID, "err", err)
	}
	return c, first, nil
}

// Cancelled is the number of cancelled orders (status.cancelled).
func (s *Service) Cancelled(ctx context.Context) (int64, error) {
	n, err := s.store.CancelledCount(ctx)
	if err != nil {
		return 0, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	return n, nil
}

// applyLocal makes this pod forget that the seat is sold or held and that
// the buyer is at the limit, and that the sale is sold out.
func (s *Service) applyLocal(order uuid.UUID, ticket int64, buyer string) {
	s.noteCancel(order, time.Now())
	s.sold.remove(ticket)
	s.held.forget(ticket)
	s.onHold.forget(ticket)
	s.soldOut.Store(false)
	if _, ok := s.limited.LoadAndDelete(buyer); ok {
		s.limitedCount.Add(-1)
	}
}

// noteCancel stamps lastCancel when order's cancellation is applied for the
// first time on this pod. The poll re-applies every cancellation of the last
// CancelReapplyWindow (and the channel and the cancelling call apply it
// too): stamping each re-application kept the sold-out shortcut off for up
// to twice the window after the cancellation, not the window.
func (s *Service) noteCancel(order uuid.UUID, now time.Time) {
	s.cancelsMu.Lock()
	defer s.cancelsMu.Unlock()
	if _, ok := s.cancels[order]; ok {
		return
	}
	// Forget what the poll no longer re-applies (a cancellation stays in
	// its window CancelReapplyWindow by PostgreSQL's clock, so twice that
	// by ours leaves room for skew), in one sweep per window: a mass
	// cancellation must not rescan the map per order.
	if now.Sub(s.cancelsSwept) > CancelReapplyWindow {
		for id, at := range s.cancels {
			if now.Sub(at) > 2*CancelReapplyWindow {
				delete(s.cancels, id)
			}
		}
		s.cancelsSwept = now
	}
	if s.cancels == nil {
		s.cancels = map[uuid.UUID]time.Time{}
	}
	s.cancels[order] = now
	s.lastCancel.Store(now.UnixNano())
}

// recentlyCancelled says whether this pod applied a cancellation within
// CancelReapplyWindow (SetSoldOut then ignores a status still saying sold
// out: the reporter has not counted the seat back yet).
func (s *Service) recentlyCancelled() bool {
	last := s.lastCancel.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < CancelReapplyWindow
}

// FollowCancellations applies the sale's cancellations to this pod until
// ctx ends: at once from the sale's Redis channel, and from a poll of
// Postgres every CancelPollInterval (see the top of this file).
func (s *Service) FollowCancellations(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.listen(ctx) })
	// The pod's memories start empty: only cancellations from now on (and
	// the window's, for Redis) matter.
	cursor := int64(-1)
	var unsold map[seatlock.SoldSeat]bool // markers whose removal failed, retried
	t := time.NewTicker(CancelPollInterval)
	defer t.Stop()
	for {
		if err := s.pollCancellations(ctx, &cursor, &unsold); err != nil && ctx.Err() == nil {
			s.log.Warn("reading the sale's cancellations failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// listen applies the cancellations announced on the sale's channel.
func (s *Service) listen(ctx context.Context) {
	s.locks.Listen(ctx, func(payload string) {
		var m cancelMessage
		if err := json.Unmarshal([]byte(payload), &m); err != nil || m.TicketID <= 0 {
			s.log.Warn("ignoring a malformed cancellation message", "err", err)
			return
		}
		s.applyLocal(m.OrderID, m.TicketID, m.BuyerID)
	})
}

// pollCancellations applies the cancellations after *cursor and re-applies
// those of the last CancelReapplyWindow. A seat whose marker could not be
// cleared (Redis down, or scaled to 0 while the sale hibernates) stays in
// *retry until Redis answers, whatever the window: a marker left behind
// would refuse buyers a free seat without asking Postgres.
func (s *Service) pollCancellations(ctx context.Context, cursor *int64, retry *map[seatlock.SoldSeat]bool) error {
	ctx, cancel := context.WithTimeout(ctx, CancelPollInterval)
	defer cancel()
	cs, next, err := s.store.RecentCancellations(ctx, *cursor, CancelReapplyWindow)
	if err != nil {
		return err
	}
	*cursor = next
	seats := make([]seatlock.SoldSeat, 0, len(cs)+len(*retry))
	for _, c := range cs {
		s.applyLocal(c.OrderID, c.TicketID, c.BuyerID)
		seat := seatlock.SoldSeat{ID: c.TicketID, OrderID: c.OrderID.String()}
		if !(*retry)[seat] {
			seats = append(seats, seat)
		}
	}
	for seat := range *retry {
		seats = append(seats, seat)
	}
	if len(seats) == 0 {
		return nil
	}
	if _, err := s.locks.Unsell(ctx, seats); err != nil {
		if *retry == nil {
			*retry = map[seatlock.SoldSeat]bool{}
		}
		for _, seat := range seats {
			if len(*retry) < maxUnsellRetries {
				(*retry)[seat] = true
			}
		}
		return fmt.Errorf("clear the markers of %d cancelled seats: %w", len(seats), err)
	}
	clear(*retry)
	return nil
}

// maxUnsellRetries bounds the markers a pod keeps retrying (each pod does,
// so one that restarts and forgets them is covered by the others).
const maxUnsellRetries = 1 << 14

// cancelledError is the answer for an order found cancelled; nil when err
// is not that.
func cancelledError(err error) error {
	var c *orderstore.CancelledError
	if !errors.As(err, &c) {
		return nil
	}
	return &sale.CancelledOrderError{OrderID: c.OrderID, BuyerID: c.BuyerID}
}
