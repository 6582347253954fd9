package checkout

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
)

// A hold's confirmation writes an order whose id is computed from the hold
// id, so that every retry of the confirmation writes (and finds) the same
// order. The computation is a keyed permutation, not a one-way hash: GET
// /v1/orders/{id} runs it backwards to find the hold, and so answers
// order_pending, not a premature 404, while that hold's confirmation may
// still commit (issue 17, defect 5).
//
// The permutation is a balanced Feistel network of holdOrderRounds rounds
// over the 122 bits of a UUID that are neither its version nor its variant
// (61-bit halves; the round function is HMAC-SHA256 under the sale's id key,
// its own label first), written out as a UUID version 8 like every derived
// id. Nobody without the sale's secret can relate an order id to its hold
// id, in either direction, nor compute one from the other. The inverse
// cannot tell a random hold id (v4) from a keyed one (v8): both candidates
// are looked up.

const holdOrderRounds = 8

// holdOrderID is the order id a hold's confirmation writes: every retry of
// the confirmation presents the same one.
func (s *Service) holdOrderID(holdID uuid.UUID) uuid.UUID {
	m := s.mac()
	defer s.macs.Put(m)
	l, r := uuidHalves(holdID)
	for round := range holdOrderRounds {
		l, r = r, l^holdOrderRound(m, round, r)
	}
	return uuidFromHalves(l, r, 8)
}

// holdsOfOrder are the hold ids whose confirmation writes orderID: the
// keyed (v8) and the random (v4) reading of the permutation's inverse.
func (s *Service) holdsOfOrder(orderID uuid.UUID) [2]uuid.UUID {
	m := s.mac()
	defer s.macs.Put(m)
	l, r := uuidHalves(orderID)
	for round := holdOrderRounds - 1; round >= 0; round-- {
		l, r = r^holdOrderRound(m, round, l), l
	}
	return [2]uuid.UUID{uuidFromHalves(l, r, 8), uuidFromHalves(l, r, 4)}
}

const half61 = 1<<61 - 1

// holdOrderRound is the round function: m is an HMAC-SHA256 under the
// sale's secret (from s.macs: a confirmation runs eight rounds, and
// hmac.New per round was a tenth of the pod's CPU in a checkout).
func holdOrderRound(m hash.Hash, round int, x uint64) uint64 {
	m.Reset()
	m.Write([]byte("\x00hold-order permutation\x00"))
	var in [9]byte
	in[0] = byte(round)
	binary.BigEndian.PutUint64(in[1:], x)
	m.Write(in[:])
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(m.Sum(sum[:0])) & half61
}

// uuidHalves splits the 122 free bits of id (all but the version nibble
// and the variant's two bits) into two halves of 61.
func uuidHalves(id uuid.UUID) (l, r uint64) {
	a, b := binary.BigEndian.Uint64(id[:8]), binary.BigEndian.Uint64(id[8:])
	a60 := a>>16<<12 | a&0xfff // without the version nibble (bits 12..15)
	b62 := b & (1<<62 - 1)     // without the variant (the top two bits)
	return a60<<1 | b62>>61, b62 & half61
}

// uuidFromHalves is uuidHalves' inverse, with the version given and the
// RFC 9562 variant.
func uuidFromHalves(l, r uint64, version uint64) uuid.UUID {
	a60, b62 := l>>1, (l&1)<<61|r
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[:8], a60>>12<<16|version<<12|a60&0xfff)
	binary.BigEndian.PutUint64(id[8:], 0b10<<62|b62)
	return id
}

// holdOrder answers GET /v1/orders/{id} for an id no order has yet, when it
// is a hold's order id: the order once the confirmation committed;
// ErrOrderPending (with the seconds to wait) while a confirmation may still
// commit: the hold is live, or expired less than SettleAfter ago (a
// confirmation that passed the expiry check just before it commits within
// that); ErrOrderNotFound once the hold was released (a release and a
// confirmation exclude each other on the hold's row) or expired longer ago.
// ok is false when no hold has this order id.
func (s *Service) holdOrder(ctx context.Context, orderID uuid.UUID) (o Order, ok bool, err error) {
	var h orderstore.Hold
	for _, id := range s.holdsOfOrder(orderID) {
		if h, err = s.store.Hold(ctx, id); err == nil {
			break
		}
		if !errors.Is(err, orderstore.ErrHoldNotFound) {
			return Order{}, true, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
		}
	}
	if err != nil {
		return Order{}, false, nil
	}
	switch h.State {
	case orderstore.HoldConfirmed:
		if h.OrderID != orderID {
			return Order{}, true, sale.ErrOrderNotFound // confirmed under another id (before this derivation)
		}
		// Committed between the two reads (and perhaps cancelled since).
		o, err = s.store.Order(ctx, orderID)
		if cerr := cancelledError(err); cerr != nil {
			return Order{}, true, cerr
		}
		if err != nil {
			return Order{}, true, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
		}
		return o, true, nil
	case orderstore.HoldReleased:
		return Order{}, true, sale.ErrOrderNotFound
	}
	settle := s.SettleAfter()
	left := time.Until(h.ExpiresAt.Add(settle))
	if left <= 0 {
		return Order{}, true, sale.ErrOrderNotFound
	}
	return Order{}, true, &sale.RetryAfterError{Seconds: int(min(left, settle)/time.Second) + 1, Err: sale.ErrOrderPending}
}

// HoldOrderID is the order id the confirmation of hold holdID writes (the
// id its 503 names).
func (s *Service) HoldOrderID(holdID uuid.UUID) uuid.UUID { return s.holdOrderID(holdID) }
