package checkout

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Seat holds (issue 11): a buyer holds a seat for holdTTL while paying,
// then confirms it into an order or releases it. The hold is the
// purchase algorithm cut in two:
//  1. local checks (window, pause, limit memory, sold/held memory);
//  2. one Redis round trip, SET NX PX holdTTL with the token "hold:<holdId>":
//     losers fail fast with ticket_held / ticket_locked / ticket_sold;
//  3. hold_seat in Postgres, the fence: the seat's row takes the hold only
//     if it is unsold and under no live hold, whatever Redis said.
//
// Redis frees the seat by itself when the marker's PX runs out; Postgres
// frees it lazily (held_until in the past is no hold). Confirm and release
// only talk to Postgres, then fix Redis up (sold marker, or token-checked
// delete and back into the any-seat pool).

// Hold is a hold as the API shows it.
type Hold = orderstore.Hold

// HoldRequest is one buyer's attempt to hold a seat: the fields of a
// purchase, read alike (the same key returns the same hold; a Refusal holds
// nothing new but lets a keyed retry learn the hold its key placed).
type HoldRequest = Request

// PlaceHold holds a seat for the buyer for the live holdTTL. replayed is
// true when the request's idempotency key had already placed the hold.
func (s *Service) PlaceHold(ctx context.Context, req HoldRequest) (h Hold, replayed bool, err error) {
	ttl := s.HoldTTL()
	if ttl <= 0 {
		return Hold{}, false, sale.ErrHoldsDisabled
	}
	now := time.Now()
	holdID := s.newHoldID(req)
	if err := s.refuseLocally(req, now); err != nil {
		if req.IdempotencyKey != "" && mayBeReplay(err) {
			return s.replayHold(ctx, holdID, req, err)
		}
		return Hold{}, false, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	token := seatlock.HoldToken(holdID.String())
	if req.TicketID == 0 {
		return s.holdAny(ctx, req, holdID, token, ttl)
	}
	res, err := s.locks.AcquireFor(ctx, req.TicketID, token, ttl)
	if err != nil {
		s.metrics.lockError.Inc()
		return Hold{}, false, sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
	}
	if err := s.taken(req.TicketID, res, now); err != nil {
		if err == sale.ErrTicketSold && req.IdempotencyKey != "" {
			return s.replayHold(ctx, holdID, req, err) // perhaps ours, confirmed since
		}
		return Hold{}, false, err
	}
	return s.fenceHold(ctx, req.TicketID, holdID, token, req, ttl)
}

// fenceHold runs hold_seat with the seat's Redis lock taken under token.
func (s *Service) fenceHold(ctx context.Context, id int64, holdID uuid.UUID, token string, req HoldRequest, ttl time.Duration) (Hold, bool, error) {
	h, replayed, err := s.store.PlaceHold(ctx, orderstore.HoldRequest{
		TicketID: id, HoldID: holdID, BuyerID: req.BuyerID, TTL: ttl, MaxPerBuyer: int(s.maxPerBuyer.Load()),
	})
	var sold *orderstore.SoldError
	var held *orderstore.HeldError
	switch {
	case err == nil && h.TicketID != id:
		// A retry of a keyed hold that the first attempt placed on
		// another seat: give this one back.
		s.release(id, token)
		if req.TicketID != 0 {
			return Hold{}, false, fmt.Errorf("%w: Idempotency-Key was already used for a hold of ticket %d", sale.ErrInvalidRequest, h.TicketID)
		}
		return s.replayHold(ctx, holdID, req, sale.ErrHoldNotFound)
	case err == nil && replayed:
		// The key's hold exists already; it may have ended (released,
		// expired, confirmed). Then the marker this attempt just wrote
		// would block a seat Postgres calls free: take it back.
		rh, _, rerr := s.replayHold(ctx, holdID, req, sale.ErrHoldNotFound)
		if rerr != nil || rh.State != orderstore.HoldHeld {
			s.release(id, token)
			s.onHold.forget(id)
			return rh, rerr == nil, rerr
		}
		// Live: if Redis had lost the hold's marker, this attempt wrote a
		// new one lasting holdTTL from now, past the hold's own expiry;
		// the seat must be sellable once Postgres frees it.
		s.keepHoldMarker(id, holdID, rh.ExpiresAt)
		return rh, true, nil
	case err == nil:
		return h, false, nil
	case errors.As(err, &sold):
		s.fencedSold(id, token, sold.OrderID)
		return Hold{}, false, sale.ErrTicketSold
	case errors.As(err, &held) && held.HoldID == holdID:
		// A concurrent retry of this keyed hold placed it first (its
		// statement waited on the seat's row): this attempt is its replay,
		// and the marker (the same token) ends with the hold.
		s.keepHoldMarker(id, holdID, held.Until)
		return s.replayHold(ctx, holdID, req, sale.ErrTicketHeld)
	case errors.As(err, &held):
		// Redis had lost this hold's marker (FLUSHALL, restart): Postgres
		// refused a second hold; put the marker back for the rest of its life.
		s.metrics.fenceHeld.Inc()
		s.restoreHold(id, token, held)
		return Hold{}, false, sale.ErrTicketHeld
	}
	s.release(id, token)
	if errors.Is(err, orderstore.ErrBuyerLimit) {
		s.noteLimit(req.BuyerID, err)
		return Hold{}, false, sale.ErrBuyerLimit
	}
	// The hold may have committed with its answer lost: it then expires by
	// itself (a keyed retry finds it).
	return Hold{}, false, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
}

// keepHoldMarker makes the seat's marker of hold holdID (this attempt's
// token) expire when the hold does in Postgres: ExpireHold, PXAT until, or
// a release if that is past. A marker gone meanwhile stays gone (the
// buyer released the hold between the replay's read and this: writing it
// again would refuse the free seat until the hold's old expiry). A failure
// costs time, never a double sale: the seat stays refused by Redis until
// the marker's own PX runs out.
func (s *Service) keepHoldMarker(id int64, holdID uuid.UUID, until time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), sideEffectTimeout)
	defer cancel()
	token := seatlock.HoldToken(holdID.String())
	if err := s.locks.ExpireHold(ctx, id, token, holdID.String(), until); err != nil {
		s.log.Warn("could not set a hold's marker to the hold's expiry in redis", "ticket", id, "err", err)
	}
}

// holdAny holds a random free seat from the any-seat pool.
func (s *Service) holdAny(ctx context.Context, req HoldRequest, holdID uuid.UUID, token string, ttl time.Duration) (Hold, bool, error) {
	if req.IdempotencyKey != "" {
		// No seat to lock under the key, so look the hold up first.
		if h, replayed, err := s.replayHold(ctx, holdID, req, sale.ErrHoldNotFound); !errors.Is(err, sale.ErrHoldNotFound) {
			return h, replayed, err
		}
	}
	err := fmt.Errorf("%w: every seat tried was taken meanwhile; retry", sale.ErrTicketLocked)
	for range 3 {
		var id int64
		if id, err = s.takeAnySeat(ctx, token, ttl); err != nil {
			break
		}
		h, replayed, ferr := s.fenceHold(ctx, id, holdID, token, req, ttl)
		if errors.Is(ferr, sale.ErrTicketSold) || errors.Is(ferr, sale.ErrTicketHeld) {
			continue // a stale pool entry, e.g. after Redis lost its data
		}
		return h, replayed, ferr
	}
	if req.IdempotencyKey != "" && errors.Is(err, sale.ErrTicketLocked) {
		// The seats this retry found locked may be its own siblings'
		// (the same token): one of them may have placed the hold.
		return s.replayHold(ctx, holdID, req, err)
	}
	return Hold{}, false, err
}

// replayHold answers the hold a keyed request already placed, or refusal
// when there is none. A hold that has ended without an order (released or
// expired) answers hold_expired: its seat is no longer the buyer's.
func (s *Service) replayHold(ctx context.Context, holdID uuid.UUID, req HoldRequest, refusal error) (Hold, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	h, err := s.store.Hold(ctx, holdID)
	switch {
	case errors.Is(err, orderstore.ErrHoldNotFound):
		return Hold{}, false, refusal
	case err != nil:
		return Hold{}, false, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	case req.TicketID != 0 && h.TicketID != req.TicketID:
		return Hold{}, false, fmt.Errorf("%w: Idempotency-Key was already used for a hold of ticket %d", sale.ErrInvalidRequest, h.TicketID)
	case h.State == orderstore.HoldReleased || h.State == orderstore.HoldExpired:
		return Hold{}, false, sale.ErrHoldExpired
	}
	return h, true, nil
}

// ConfirmHold turns the buyer's live hold into an order. It is idempotent:
// the order id is derived from the hold id, and a repeat answers the same
// order (replayed). A confirmed hold's order is answered whatever the
// window or the pause switch say; a new confirmation obeys them.
func (s *Service) ConfirmHold(ctx context.Context, holdID uuid.UUID, buyer, paymentRef string) (Order, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	if err := s.schedule.Load().Check(time.Now()); err != nil {
		return s.replayConfirm(ctx, holdID, buyer, err)
	}
	orderID := s.holdOrderID(holdID)
	o, replayed, err := s.store.ConfirmHold(ctx, holdID, buyer, orderID, paymentRef)
	switch {
	case err == nil:
		if !replayed {
			s.metrics.sold.Inc()
		}
		s.markSoldNow(o.TicketID, o.ID.String())
		return o, replayed, nil
	case errors.Is(err, orderstore.ErrHoldNotFound):
		return Order{}, false, sale.ErrHoldNotFound
	case errors.Is(err, orderstore.ErrHoldExpired):
		return Order{}, false, sale.ErrHoldExpired
	}
	if cerr := cancelledError(err); cerr != nil {
		return Order{}, false, cerr // the hold's order was cancelled since
	}
	return Order{}, false, &sale.PendingOrderError{OrderID: orderID, Err: sale.Unavailable(sale.ErrDatabaseUnavailable, err)}
}

// replayConfirm answers the order of an already confirmed hold, or refusal.
func (s *Service) replayConfirm(ctx context.Context, holdID uuid.UUID, buyer string, refusal error) (Order, bool, error) {
	h, err := s.store.Hold(ctx, holdID)
	if err != nil || h.BuyerID != buyer || h.State != orderstore.HoldConfirmed {
		return Order{}, false, refusal
	}
	o, err := s.store.Order(ctx, h.OrderID)
	if cerr := cancelledError(err); cerr != nil {
		return Order{}, false, cerr
	}
	if err != nil {
		return Order{}, false, refusal
	}
	return o, true, nil
}

// ReleaseHold gives a hold's seat back at once. Idempotent: releasing a
// released, expired or confirmed hold changes nothing. Redis's marker is
// removed token-checked whatever Postgres answered, so a retry after a lost
// answer still clears it (and a seat sold or held by someone else since
// keeps its marker). If Redis cannot be told, the answer is 503: Postgres
// has freed the seat, but until the marker goes buyers would still be
// refused ticket_held, so the client should retry the DELETE.
func (s *Service) ReleaseHold(ctx context.Context, holdID uuid.UUID) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	ticket, _, err := s.store.ReleaseHold(ctx, holdID)
	switch {
	case errors.Is(err, orderstore.ErrHoldNotFound):
		return sale.ErrHoldNotFound
	case err != nil:
		return sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	s.onHold.forget(ticket)
	if _, err := s.locks.Release(ctx, ticket, seatlock.HoldToken(holdID.String())); err != nil {
		return sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
	}
	return nil
}

// Hold returns a hold and its state. The hold id is the capability: whoever
// has it may read the hold.
func (s *Service) Hold(ctx context.Context, holdID uuid.UUID) (Hold, error) {
	h, err := s.store.Hold(ctx, holdID)
	switch {
	case errors.Is(err, orderstore.ErrHoldNotFound):
		return Hold{}, sale.ErrHoldNotFound
	case err != nil:
		return Hold{}, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	return h, nil
}

// newHoldID is random (v4: the id is the hold's capability, so it must not
// be guessable), or derived from buyer and idempotency key under the sale's
// secret so that retries of one hold meet, in Redis and in Postgres.
func (s *Service) newHoldID(req HoldRequest) uuid.UUID {
	if req.IdempotencyKey != "" {
		return s.derivedID("hold", req.BuyerID, req.IdempotencyKey)
	}
	return uuid.New()
}
