// Package checkout sells one sale's seats: the purchase algorithm of
// design §4 (a per-seat Redis lock that fails losers fast, a Postgres
// confirmation that makes a double sale impossible), checkout holds, and
// the pod's memories that answer hot seats without I/O (sold set, held-seat
// memory, buyers at the limit). It knows nothing of HTTP or of the waiting
// room: a refusal decided before checkout arrives in Request.Refusal.
package checkout

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Order is a confirmed purchase.
type Order = orderstore.Order

// Request is one buyer's purchase attempt.
type Request struct {
	TicketID       int64 // 0: any free seat
	BuyerID        string
	IdempotencyKey string // optional; the same key returns the same order
	// Refusal, when set, was decided before checkout (the waiting room's
	// pass check): nothing new is bought, but a keyed retry still learns
	// the order its key already bought.
	Refusal error
}

const (
	// poolRefillSize is how many unsold seats one refill of the any-seat pool
	// adds: enough for thousands of purchases, small enough to keep Redis
	// memory flat whatever the inventory.
	poolRefillSize = 4096
	// anySeatTries bounds the seats one any-seat script call looks at.
	anySeatTries = 16
	// refillInterval keeps a pod from rescanning Postgres more often than
	// this when the only unsold seats left are held by other buyers.
	refillInterval = 100 * time.Millisecond
	// MaxHeldMemory caps how long a pod trusts that a seat it saw held is
	// still held (see heldCache).
	MaxHeldMemory = 20 * time.Millisecond
	// Timeout bounds one purchase end to end.
	Timeout = 5 * time.Second
	// sideEffectTimeout bounds the Redis writes that follow a decision
	// (sold marker, release); they run even if the buyer went away.
	sideEffectTimeout = time.Second
	// maxLimitedBuyers bounds the pod's memory of buyers at the limit.
	maxLimitedBuyers = 1 << 16
)

// Config is what checkout needs of the pod's configuration. Tickets,
// Schedule, MaxPerBuyer, LockTTL and HoldTTL are the values at start; the
// Set methods change them live.
type Config struct {
	Tickets     int64
	Schedule    sale.Schedule
	MaxPerBuyer int
	LockTTL     time.Duration
	HoldTTL     time.Duration // 0: holds off
	// Sale and Secret key the order and hold ids derived from
	// Idempotency-Keys (under their own label: sale.DeriveKey).
	Sale   string
	Secret []byte
}

// Service sells one sale's seats.
type Service struct {
	startLockTTL time.Duration // the lock TTL at start (settleAfter)
	schedule     atomic.Pointer[sale.Schedule]
	// tickets, maxPerBuyer and holdTTL are live (live.go): the FlashSale
	// may change them.
	tickets     atomic.Int64
	maxPerBuyer atomic.Int64
	holdTTL     atomic.Int64 // nanoseconds; 0: holds off
	soldOut     atomic.Bool  // every seat of tickets is sold, as the FlashSale's status reports
	locks       Locks
	store       Store
	sold        *soldSet
	held        *heldCache // seats seen locked by a purchase
	onHold      *heldCache // seats seen under a checkout hold
	metrics     *metrics
	log         *slog.Logger
	secret      []byte    // HMAC key of ids derived from idempotency keys
	macs        sync.Pool // of hash.Hash: HMAC-SHA256 under secret (hmac.New costs more than the hash)

	// limited remembers buyers Postgres refused at the limit: buyer id →
	// tickets they hold (at least). Only a cancellation gives an order
	// back, and every pod then forgets the buyer (cancel.go); it is only
	// consulted while the limit is not above it.
	limited      sync.Map
	limitedCount atomic.Int64
	// lastCancel is when this pod first applied its latest cancellation
	// (unix ns); cancels, the cancellations it applied and when (noteCancel).
	lastCancel   atomic.Int64
	cancelsMu    sync.Mutex
	cancels      map[uuid.UUID]time.Time
	cancelsSwept time.Time

	refills    singleflight.Group
	lastRefill atomic.Int64 // unix nanoseconds of the last pool refill

	// sideEffects counts the Redis writes still running behind answers
	// already given (markSold); Wait waits for them, after it set
	// sideStopped (both under sideMu, so no Add races the Wait).
	sideMu      sync.Mutex
	sideStopped bool
	sideEffects sync.WaitGroup

	// beforeConfirm, when set (tests only), runs with the seat lock held,
	// right before the Postgres transaction.
	beforeConfirm func(ticket int64)
}

// New returns a service over an opened store and lock space whose series
// are registered with reg.
func New(cfg Config, locks Locks, store Store, reg prometheus.Registerer, log *slog.Logger) *Service {
	s := &Service{
		startLockTTL: cfg.LockTTL,
		locks:        locks,
		store:        store,
		sold:         newSoldSet(cfg.Tickets),
		held:         newHeldCache(heldMemory(cfg.LockTTL)),
		onHold:       newHeldCache(MaxHeldMemory),
		metrics:      newMetrics(reg),
		log:          log,
		secret:       sale.DeriveKey(cfg.Secret, "flux-order order and hold ids v1", cfg.Sale),
	}
	s.SetSchedule(cfg.Schedule)
	s.tickets.Store(cfg.Tickets)
	s.SetMaxPerBuyer(cfg.MaxPerBuyer)
	s.SetHoldTTL(cfg.HoldTTL)
	return s
}

// SetBeforeConfirm makes f run with a seat's lock held, right before its
// Postgres transaction. Tests only: it lets them stall a purchase there.
func (s *Service) SetBeforeConfirm(f func(ticket int64)) { s.beforeConfirm = f }

// Purchase runs the purchase algorithm of design §4 for one request:
//  1. window, pause and input checks from local state (no I/O);
//  2. one Redis round trip to lock the seat, or fail fast;
//  3. one Postgres transaction that confirms it (the fence);
//  4. mark the seat sold in Redis, or release the lock.
//
// replayed is true when the idempotency key had already bought the order.
// A request with a key that already bought its order is answered that order
// whatever step 1 says: a retry after the sale closed still learns it won.
//
// Past step 1, the purchase runs on a context detached from the caller's and
// bounded by Timeout: a buyer who hangs up cannot cut a confirmation
// in half, and a dead dependency turns into a 503, not a hung request. A 503
// given once the seat's lock was taken is a *sale.PendingOrderError naming the
// order, whose outcome GET /v1/orders/{id} tells (see Service.Order).
func (s *Service) Purchase(ctx context.Context, req Request) (o Order, replayed bool, err error) {
	now := time.Now()
	if err := s.refuseLocally(req, now); err != nil {
		if req.IdempotencyKey != "" && mayBeReplay(err) {
			return s.replayOr(ctx, req, err)
		}
		return Order{}, false, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	if req.TicketID == 0 {
		return s.purchaseAny(ctx, req)
	}
	keyed := req.IdempotencyKey != ""
	orderID := s.newOrderID(req)
	res, err := s.locks.Acquire(ctx, req.TicketID, orderID.String())
	if err != nil {
		// No confirmation was attempted: certainly no order.
		s.metrics.lockError.Inc()
		return Order{}, false, sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
	}
	if err := s.taken(req.TicketID, res, now); err != nil {
		if err == sale.ErrTicketSold && keyed && (res.Owner == orderID.String() || res.Owner == "") {
			return s.replay(ctx, req)
		}
		return Order{}, false, err
	}
	return s.confirm(ctx, req.TicketID, orderID, req)
}

// taken notes what a lock attempt on seat id found (counted, and
// remembered by the pod) and answers its refusal; nil when the lock was
// acquired.
func (s *Service) taken(id int64, res seatlock.Result, now time.Time) error {
	switch res.State {
	case seatlock.Held:
		s.metrics.lockHeld.Inc()
		s.held.remember(id, now)
		return sale.ErrTicketLocked
	case seatlock.OnHold:
		s.metrics.lockOnHold.Inc()
		s.held.forget(id) // a claimed refresh (heldCache.held) must not answer ticket_locked
		s.onHold.remember(id, now)
		return sale.ErrTicketHeld
	case seatlock.Sold:
		s.metrics.lockSold.Inc()
		s.sold.add(id)
		return sale.ErrTicketSold
	}
	s.metrics.lockAcquired.Inc()
	// Ours now, by a purchase or a checkout hold: Redis, not a claimed
	// refresh of the memories, says which to the next buyers.
	s.held.forget(id)
	s.onHold.forget(id)
	return nil
}

// refuseLocally is step 1: the answers this pod can give without I/O.
func (s *Service) refuseLocally(req Request, now time.Time) error {
	if req.Refusal != nil {
		return req.Refusal
	}
	if err := s.schedule.Load().Check(now); err != nil {
		return err
	}
	if s.atLimit(req.BuyerID) {
		s.metrics.knownLimited.Inc()
		return sale.ErrBuyerLimit
	}
	// A sold-out sale stays sold out until tickets grow (soldOut is cleared
	// then): answered without I/O, which also holds while a hibernating
	// sale's Redis is scaled to 0. Retries with a key still find their order.
	soldOut := s.soldOut.Load() && req.IdempotencyKey == ""
	if req.TicketID == 0 {
		if soldOut {
			return sale.ErrSoldOut
		}
		return nil
	}
	if req.TicketID < 1 || req.TicketID > s.tickets.Load() {
		return sale.ErrTicketNotFound
	}
	if req.IdempotencyKey != "" {
		return nil // a retry may be the seat's own buyer: ask Redis
	}
	// A seat once sold is sold forever; a seat held a moment ago is most
	// likely still held.
	if soldOut || s.sold.has(req.TicketID) {
		s.metrics.lockKnownSold.Inc()
		return sale.ErrTicketSold
	}
	if s.held.held(req.TicketID, now) {
		s.metrics.lockKnownHeld.Inc()
		return sale.ErrTicketLocked
	}
	if s.onHold.held(req.TicketID, now) {
		s.metrics.lockKnownOnHold.Inc()
		return sale.ErrTicketHeld
	}
	return nil
}

// mayBeReplay says whether a local refusal could hide a committed order of
// the request's idempotency key: the window, the pause switch, the buyer
// limit and a missing or expired pass refuse new orders, not the replay of
// an old one.
func mayBeReplay(err error) bool {
	return errors.Is(err, sale.ErrSaleEnded) || errors.Is(err, sale.ErrSalePaused) ||
		errors.Is(err, sale.ErrSaleNotStarted) || errors.Is(err, sale.ErrBuyerLimit) ||
		errors.Is(err, sale.ErrPassRequired) || errors.Is(err, sale.ErrPassInvalid)
}

// replayOr answers the order the request's key bought, or refusal when the
// key bought nothing (or the database cannot say).
func (s *Service) replayOr(ctx context.Context, req Request, refusal error) (Order, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), Timeout)
	defer cancel()
	o, replayed, err := s.replay(ctx, req)
	if err != nil && !errors.Is(err, sale.ErrInvalidRequest) {
		return Order{}, false, refusal
	}
	return o, replayed, err
}

// atLimit says, without I/O, whether the buyer is known to hold the
// maximum number of tickets.
func (s *Service) atLimit(buyer string) bool {
	limit := int(s.maxPerBuyer.Load())
	if limit == 0 {
		return false
	}
	held, ok := s.limited.Load(buyer)
	return ok && held.(int) >= limit
}

// noteLimit remembers a buyer Postgres refused at the limit, but only when
// orders alone reach it: holds end, orders stay.
func (s *Service) noteLimit(buyer string, err error) {
	var lim *orderstore.LimitError
	if limit := int(s.maxPerBuyer.Load()); errors.As(err, &lim) && limit > 0 && lim.Orders >= limit {
		s.rememberLimited(buyer, limit)
	}
}

// rememberLimited records that Postgres refused the buyer at limit.
func (s *Service) rememberLimited(buyer string, limit int) {
	if s.limitedCount.Add(1) > maxLimitedBuyers {
		// A flood of distinct buyers: start over rather than grow.
		s.limited.Clear()
		s.limitedCount.Store(1)
	}
	s.limited.Store(buyer, limit)
}

// heldMemory is how long a pod remembers a seat it saw held: a fraction of
// the lock's life, never more than MaxHeldMemory.
func heldMemory(lockTTL time.Duration) time.Duration {
	return min(lockTTL/10, MaxHeldMemory)
}

// newOrderID is random and time-ordered (v7, kind to the orders index, and
// its time tells Service.Order when the outcome is settled), or derived from
// buyer and idempotency key so that concurrent retries of one purchase
// present the same lock token and meet in Postgres. A derived id is an
// HMAC-SHA256 under the sale's secret (UUID version 8): nobody without the
// secret can compute another buyer's order id from public inputs.
func (s *Service) newOrderID(req Request) uuid.UUID {
	if req.IdempotencyKey != "" {
		return s.derivedID("", req.BuyerID, req.IdempotencyKey)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.New()
	}
	return id
}

// mac is a reset HMAC-SHA256 under the sale's secret, for s.macs.Put once
// used.
func (s *Service) mac() hash.Hash {
	if m, ok := s.macs.Get().(hash.Hash); ok {
		m.Reset()
		return m
	}
	return hmac.New(sha256.New, s.secret)
}

// derivedID is HMAC-SHA256 under the sale's secret of parts joined by NUL,
// as a UUID version 8. A non-empty domain ("hold", "hold-order") is written
// first behind a NUL: a buyer id never starts with one, so ids of different
// domains never collide with a purchase's (buyer, key) id.
func (s *Service) derivedID(domain string, parts ...string) uuid.UUID {
	m := s.mac()
	defer s.macs.Put(m)
	if domain != "" {
		m.Write([]byte{0})
		m.Write([]byte(domain))
		m.Write([]byte{0})
	}
	for i, p := range parts {
		if i > 0 {
			m.Write([]byte{0})
		}
		m.Write([]byte(p))
	}
	var id uuid.UUID
	var sum [sha256.Size]byte
	copy(id[:], m.Sum(sum[:0]))
	id[6] = id[6]&0x0f | 0x80 // version 8
	id[8] = id[8]&0x3f | 0x80 // RFC 9562 variant
	return id
}

// replay returns the order an idempotency key already bought.
func (s *Service) replay(ctx context.Context, req Request) (Order, bool, error) {
	o, err := s.store.OrderByKey(ctx, req.BuyerID, req.IdempotencyKey)
	if cerr := cancelledError(err); cerr != nil {
		return Order{}, false, cerr
	}
	switch {
	case errors.Is(err, orderstore.ErrNotFound):
		return Order{}, false, sale.ErrTicketSold
	case err != nil:
		return Order{}, false, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	case req.TicketID != 0 && o.TicketID != req.TicketID:
		return Order{}, false, fmt.Errorf("%w: Idempotency-Key was already used for ticket %d", sale.ErrInvalidRequest, o.TicketID)
	}
	return o, true, nil
}

// confirm runs steps 3 and 4 with the seat's lock held under orderID.
func (s *Service) confirm(ctx context.Context, id int64, orderID uuid.UUID, req Request) (Order, bool, error) {
	if s.beforeConfirm != nil {
		s.beforeConfirm(id)
	}
	o, replayed, err := s.store.Confirm(ctx, orderstore.Purchase{
		TicketID: id, OrderID: orderID, BuyerID: req.BuyerID,
		IdempotencyKey: req.IdempotencyKey, MaxPerBuyer: int(s.maxPerBuyer.Load()),
		AnySeat: req.TicketID == 0,
	})
	var sold *orderstore.SoldError
	var held *orderstore.HeldError
	switch {
	case err == nil && o.TicketID != id:
		// An any-seat retry whose key already bought another seat: give
		// back the one this attempt locked.
		s.release(id, orderID.String())
		s.markSold(o.TicketID, o.ID.String())
		return o, replayed, nil
	case err == nil:
		if !replayed {
			s.metrics.sold.Inc()
		}
		s.markSold(id, o.ID.String())
		return o, replayed, nil
	case errors.As(err, &sold):
		// Our lock expired and another buyer won, or Redis had lost the
		// seat's marker: Postgres refused, so put the marker back.
		s.fencedSold(id, orderID.String(), sold.OrderID)
		return Order{}, false, sale.ErrTicketSold
	case errors.As(err, &held):
		// Redis had lost the hold's marker: put it back.
		s.metrics.fenceHeld.Inc()
		s.restoreHold(id, orderID.String(), held)
		return Order{}, false, sale.ErrTicketHeld
	}
	s.release(id, orderID.String())
	if cerr := cancelledError(err); cerr != nil {
		// The key's order was cancelled: it buys nothing again.
		return Order{}, false, cerr
	}
	switch {
	case errors.Is(err, orderstore.ErrBuyerLimit):
		s.noteLimit(req.BuyerID, err)
		return Order{}, false, sale.ErrBuyerLimit
	case errors.Is(err, orderstore.ErrKeyReused):
		return Order{}, false, fmt.Errorf("%w: Idempotency-Key was already used for another ticket", sale.ErrInvalidRequest)
	}
	// The outcome of a failed commit can be unknown: the answer names the
	// order, whose outcome GET /v1/orders/{id} tells once settled (a retry
	// with the same Idempotency-Key also does).
	return Order{}, false, &sale.PendingOrderError{OrderID: orderID, Err: sale.Unavailable(sale.ErrDatabaseUnavailable, err)}
}

// markSold records the sale in this pod at once and in Redis behind the
// answer: the buyer's 201 does not wait for the marker (one Redis round
// trip, about 0.08 ms of a lone buyer's 0.9 ms). Until the marker lands the
// seat's lock, which it replaces, refuses every other buyer as well (409
// ticket_locked for that moment, not ticket_sold); a pod that dies first
// leaves the lock to expire, and Postgres refuses the seat to the next
// buyer, who puts the marker back (fencedSold). The write lands within
// sideEffectTimeout of waiting plus the coalescer's pipelineTimeout (3 s
// at most); a marker landing after its order's cancellation is removed by
// the pods' next poll (CancelReapplyWindow is 30 s). A failed write only
// costs speed. Wait lets these writes finish before Redis's client closes.
func (s *Service) markSold(id int64, owner string) {
	s.rememberSold(id)
	s.sideMu.Lock()
	if s.sideStopped {
		// The pod is closing (a request the grace cut short): the lock
		// expires and the fence tells the next buyer.
		s.sideMu.Unlock()
		return
	}
	s.sideEffects.Add(1) // under sideMu: never concurrent with Wait
	s.sideMu.Unlock()
	go func() {
		defer s.sideEffects.Done()
		s.writeSoldMarker(id, owner)
	}()
}

// markSoldNow is markSold with the marker written before it returns: for
// a confirmed hold, whose seat's key is the hold's marker (it lives as long
// as the hold, minutes, and says "held"; a DELETE of the hold would remove
// it), the answer waits for the sold marker that replaces it.
func (s *Service) markSoldNow(id int64, owner string) {
	s.rememberSold(id)
	s.writeSoldMarker(id, owner)
}

// rememberSold records in this pod's memories that seat id is sold.
func (s *Service) rememberSold(id int64) {
	s.sold.add(id)
	s.held.forget(id)
	s.onHold.forget(id)
}

// writeSoldMarker writes seat id's sold marker naming owner.
func (s *Service) writeSoldMarker(id int64, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), sideEffectTimeout)
	defer cancel()
	if err := s.locks.MarkSold(ctx, id, owner); err != nil {
		s.log.Warn("could not mark seat sold in redis", "ticket", id, "err", err)
	}
}

// Wait returns once the Redis writes that follow answers already given
// (markSold) are done, each within 3 s; later answers write no marker.
// The pod calls it before it closes its Redis client.
func (s *Service) Wait() {
	s.sideMu.Lock()
	s.sideStopped = true
	s.sideMu.Unlock()
	s.sideEffects.Wait()
}

// fencedSold records the fence's refusal of seat id as sold to owner: the
// sold marker replaces our lock token. A refusal that names no order
// (refuse_seat's DETAIL is empty when cancel_order commits between its two
// reads: the seat is on sale again) marks nothing and gives the lock back:
// an owner-less marker "sold:" matches no cancelled order, so no
// cancellation would ever remove it and Redis would refuse a seat
// PostgreSQL calls free (seatlock.Unsell removes one anyway, for markers
// written by older pods).
func (s *Service) fencedSold(id int64, token string, owner uuid.UUID) {
	s.metrics.fenceSold.Inc()
	if owner == uuid.Nil {
		s.release(id, token)
		return
	}
	s.markSold(id, owner.String())
}

// restoreHold replaces our lock token with the marker of the live hold
// Postgres named, so that later buyers fail fast on it again.
func (s *Service) restoreHold(id int64, token string, h *orderstore.HeldError) {
	ctx, cancel := context.WithTimeout(context.Background(), sideEffectTimeout)
	defer cancel()
	if h.HoldID == uuid.Nil {
		s.release(id, token)
		return
	}
	s.onHold.remember(id, time.Now())
	if err := s.locks.PutHold(ctx, id, token, h.HoldID.String(), h.Until); err != nil {
		s.log.Warn("could not put a hold's marker back in redis", "ticket", id, "err", err)
	}
}

// release gives the seat back after a failure before commit. If it fails,
// the lock expires by itself after lockTTL.
func (s *Service) release(id int64, token string) {
	ctx, cancel := context.WithTimeout(context.Background(), sideEffectTimeout)
	defer cancel()
	if _, err := s.locks.Release(ctx, id, token); err != nil {
		s.log.Warn("could not release seat lock; it expires by itself", "ticket", id, "err", err)
	}
}

// purchaseAny buys any free seat: the pool in Redis hands out random free
// seats in O(1), and Postgres decides when the sale is really sold out.
func (s *Service) purchaseAny(ctx context.Context, req Request) (Order, bool, error) {
	if req.IdempotencyKey != "" {
		// No seat to lock under the key, so look the key up first.
		if o, replayed, err := s.replay(ctx, req); !errors.Is(err, sale.ErrTicketSold) {
			return o, replayed, err
		}
	}
	orderID := s.newOrderID(req)
	for range 3 {
		id, err := s.takeAnySeat(ctx, orderID.String(), s.locks.TTL())
		if err != nil {
			return Order{}, false, err
		}
		o, replayed, err := s.confirm(ctx, id, orderID, req)
		if errors.Is(err, sale.ErrTicketSold) || errors.Is(err, sale.ErrTicketHeld) {
			continue // a stale pool entry, e.g. after Redis lost its data
		}
		return o, replayed, err
	}
	return Order{}, false, fmt.Errorf("%w: every seat tried was taken meanwhile; retry", sale.ErrTicketLocked)
}

// takeAnySeat locks a free seat from the pool for ttl, refilling the pool
// from Postgres when it runs dry.
func (s *Service) takeAnySeat(ctx context.Context, token string, ttl time.Duration) (int64, error) {
	for range 3 {
		id, err := s.locks.AcquireAny(ctx, token, ttl, anySeatTries)
		switch {
		case err == nil:
			s.metrics.lockAcquired.Inc()
			return id, nil
		case errors.Is(err, seatlock.ErrAllHeld):
			continue
		case errors.Is(err, seatlock.ErrPoolEmpty):
			if err := s.refillPool(ctx); err != nil {
				return 0, err
			}
		default:
			// The script is not retried (see seatlock.AcquireAny).
			s.metrics.lockError.Inc()
			return 0, sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
		}
	}
	s.metrics.lockHeld.Inc()
	return 0, fmt.Errorf("%w: every remaining seat is being bought by another buyer; retry", sale.ErrTicketLocked)
}

// errAllHeld: no seat is free, but some are held, and holds end.
var errAllHeld = fmt.Errorf("%w: every seat left is held during checkout; retry later", sale.ErrTicketHeld)

// refillPool answers sale.ErrSoldOut when Postgres counts no unsold seat, and
// otherwise adds a random run of free seats (neither sold nor held) to the
// pool; when every unsold seat is held it answers sale.ErrTicketHeld, since
// holds end. A seat whose hold expires comes back at the next refill. Concurrent
// callers in this pod share one refill.
func (s *Service) refillPool(ctx context.Context) error {
	_, err, _ := s.refills.Do("refill", func() (any, error) {
		n, err := s.store.Counts(ctx)
		if err != nil {
			return nil, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
		}
		tickets := n.Tickets
		if n.Sold >= tickets {
			return nil, sale.ErrSoldOut
		}
		if n.Sold+n.Held >= tickets {
			return nil, errAllHeld
		}
		if since := time.Now().UnixNano() - s.lastRefill.Load(); since < int64(refillInterval) {
			// Refilled a moment ago (perhaps while this caller found the
			// pool empty): let it look again rather than answer
			// ticket_locked; takeAnySeat's bounded loop answers that if
			// the pool stays empty.
			return nil, nil
		}
		ids, err := s.store.UnsoldFrom(ctx, rand.Int64N(tickets)+1, poolRefillSize)
		if err != nil {
			return nil, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
		}
		s.lastRefill.Store(time.Now().UnixNano())
		if len(ids) == 0 && n.Held > 0 {
			return nil, errAllHeld
		}
		if len(ids) == 0 {
			return nil, sale.ErrSoldOut
		}
		if err := s.locks.Refill(ctx, ids); err != nil {
			return nil, sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
		}
		return nil, nil
	})
	return err
}

// TicketStatus is what GET /v1/tickets/{id} reports.
type TicketStatus string

// Ticket states.
const (
	TicketAvailable TicketStatus = "available"
	TicketHeld      TicketStatus = "held"
	TicketSold      TicketStatus = "sold"
)

// Ticket reports a seat's state: Redis knows held and sold seats; without a
// Redis record, Postgres has the truth.
func (s *Service) Ticket(ctx context.Context, id int64) (TicketStatus, error) {
	if id < 1 || id > s.tickets.Load() {
		return "", sale.ErrTicketNotFound
	}
	if s.sold.has(id) {
		return TicketSold, nil
	}
	res, ok, err := s.locks.Peek(ctx, id)
	if err != nil {
		return "", sale.Unavailable(sale.ErrSeatStoreUnavailable, err)
	}
	if ok {
		if res.State == seatlock.Sold {
			return TicketSold, nil
		}
		return TicketHeld, nil
	}
	sold, held, err := s.store.TicketState(ctx, id)
	switch {
	case errors.Is(err, orderstore.ErrNotFound):
		return "", sale.ErrTicketNotFound
	case err != nil:
		return "", sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	case sold:
		return TicketSold, nil
	case held:
		return TicketHeld, nil
	}
	return TicketAvailable, nil
}

// Availability is the exact inventory, sales and live holds count.
type Availability struct {
	Tickets   int64 `json:"tickets"`
	Sold      int64 `json:"sold"`
	Held      int64 `json:"held"`
	Available int64 `json:"available"` // tickets - sold - held
}

// Availability reads the counts from Postgres, in one cheap query.
func (s *Service) Availability(ctx context.Context) (Availability, error) {
	n, err := s.store.Counts(ctx)
	if err != nil {
		return Availability{}, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	return Availability{Tickets: n.Tickets, Sold: n.Sold, Held: n.Held, Available: n.Tickets - n.Sold - n.Held}, nil
}

// Order returns a confirmed order. An order id is a capability: whoever
// holds it may read the order.
//
// For an order that does not exist (yet), sale.ErrOrderNotFound is final only
// once the outcome is settled. A purchase that took a lock under a random
// (v7) order id ends by Timeout after the id's time; its statement is then
// cancelled on the server (pgx sends a CancelRequest as it closes the
// connection), and a session the cancel did not reach stops within
// orderstore.ClientCheckInterval, so after settleAfter no commit of it can
// appear. Before that the answer is sale.ErrOrderPending with a Retry-After. A
// hold's order id leads back to its hold, which tells when its confirmation
// is settled (holdOrder). A purchase's derived (keyed) id carries no time:
// its transaction holds the id's advisory lock from before its statement
// is sent to its end (orderstore's withOrderLocks), so while that lock is
// held the answer is pending, and once it is free the order is read again.
func (s *Service) Order(ctx context.Context, id uuid.UUID) (Order, error) {
	o, err := s.store.Order(ctx, id)
	if cerr := cancelledError(err); cerr != nil {
		return Order{}, cerr
	}
	switch {
	case errors.Is(err, orderstore.ErrNotFound):
		if id.Version() == 8 {
			if o, ok, err := s.holdOrder(ctx, id); ok {
				return o, err
			}
			return s.keyedOrder(ctx, id)
		}
		if id.Version() == 7 {
			started := time.UnixMilli(int64(binary.BigEndian.Uint64(id[:8]) >> 16))
			if wait := time.Until(started.Add(s.SettleAfter())); wait > 0 {
				return Order{}, &sale.RetryAfterError{Seconds: int(wait.Seconds()) + 1, Err: sale.ErrOrderPending}
			}
		}
		return Order{}, sale.ErrOrderNotFound
	case err != nil:
		return Order{}, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	return o, nil
}

// keyedOrder answers a derived order id not found at first: pending while a
// purchase of it may still commit (its advisory lock is held), else the
// order read again after the lock was seen free (it may have committed
// between the first read and the lock's test), which is final when absent.
func (s *Service) keyedOrder(ctx context.Context, id uuid.UUID) (Order, error) {
	inFlight, err := s.store.KeyedPurchaseInFlight(ctx, id)
	if err != nil {
		return Order{}, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	if inFlight {
		return Order{}, &sale.RetryAfterError{Seconds: 1, Err: sale.ErrOrderPending}
	}
	o, err := s.store.Order(ctx, id)
	if cerr := cancelledError(err); cerr != nil {
		return Order{}, cerr
	}
	switch {
	case errors.Is(err, orderstore.ErrNotFound):
		return Order{}, sale.ErrOrderNotFound
	case err != nil:
		return Order{}, sale.Unavailable(sale.ErrDatabaseUnavailable, err)
	}
	return o, nil
}

// SettleAfter is how long after a purchase started its outcome is final:
// the purchase's own bound, the server noticing the session is gone, and
// the lock's life on top as a margin (the longer of the start's and the
// live one: a lock taken before a lockTTL change keeps its expiry).
func (s *Service) SettleAfter() time.Duration {
	return Timeout + orderstore.ClientCheckInterval + max(s.startLockTTL, s.locks.TTL())
}
