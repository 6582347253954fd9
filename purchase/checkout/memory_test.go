package checkout

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

func TestSoldSet_RemembersOnlyItsInventory(t *testing.T) {
	s := newSoldSet(130)
	for _, id := range []int64{1, 63, 64, 130} {
		if s.has(id) {
			t.Fatalf("%d sold before add", id)
		}
		s.add(id)
		if !s.has(id) {
			t.Fatalf("%d not sold after add", id)
		}
	}
	if s.has(2) || s.has(129) {
		t.Fatal("neighbours must stay unsold")
	}
	s.add(10_000) // beyond the inventory: ignored, no panic
	if s.has(10_000) {
		t.Fatal("seats beyond the inventory are not remembered")
	}
}

func TestHeldCache_ForgetsAfterItsWindow(t *testing.T) {
	c := newHeldCache(20 * time.Millisecond)
	now := time.Now()
	if c.held(7, now) {
		t.Fatal("nothing seen yet")
	}
	c.remember(7, now)
	if !c.held(7, now.Add(10*time.Millisecond)) {
		t.Fatal("seen held 10ms ago: must still answer held")
	}
	if c.held(7, now.Add(21*time.Millisecond)) {
		t.Fatal("past the window the pod must ask Redis again")
	}
	c.remember(8, now)
	c.forget(8)
	if c.held(8, now) {
		t.Fatal("forgotten seats are not held")
	}
	c.remember(7+heldSlots, now) // a collision evicts seat 7, never makes it look like another seat
	if c.held(7, now) || !c.held(7+heldSlots, now) {
		t.Fatal("a colliding seat must evict, not alias")
	}
	if heldMemory(5*time.Second) != MaxHeldMemory || heldMemory(100*time.Millisecond) != 10*time.Millisecond {
		t.Fatal("the memory window is a tenth of the lock TTL, capped")
	}
}

// Past the window one caller, not the whole storm, asks Redis again: the
// first is told "not held", the others keep the memory's answer until the
// asker's answer is remembered, or one more window ends without one.
func TestHeldCache_OneCallerRefreshesAnExpiredSeat(t *testing.T) {
	c := newHeldCache(20 * time.Millisecond)
	now := time.Now()
	c.remember(7, now)
	end := now.Add(21 * time.Millisecond)
	if c.held(7, end) {
		t.Fatal("the first caller past the window must ask Redis")
	}
	for i := range 3 {
		if !c.held(7, end.Add(time.Duration(i)*time.Millisecond)) {
			t.Fatal("while one caller asks Redis, the others answer from memory")
		}
	}
	if c.held(7, end.Add(21*time.Millisecond)) {
		t.Fatal("an asker that never answered holds the seat for one more window only")
	}
	c.remember(7, end.Add(22*time.Millisecond)) // Redis: still held
	if !c.held(7, end.Add(30*time.Millisecond)) {
		t.Fatal("a renewed window answers held")
	}
	if c.held(8, end) || c.held(7+heldSlots, end) {
		t.Fatal("a claim is only the seat's own")
	}
	c.forget(7)
	if c.held(7, end.Add(30*time.Millisecond)) {
		t.Fatal("forgotten seats are not held")
	}
}

// What the claimer's Redis answer finds replaces the claim at once: a
// checkout hold answers ticket_held, and a seat this pod just locked (by a
// purchase or a hold) is Redis's to describe, not the stale memory's.
func TestTaken_ReplacesAClaimedRefresh(t *testing.T) {
	s := &Service{metrics: newMetrics(prometheus.NewRegistry()), sold: newSoldSet(10),
		held: newHeldCache(20 * time.Millisecond), onHold: newHeldCache(20 * time.Millisecond)}
	now := time.Now()
	later := now.Add(21 * time.Millisecond)
	claim := func(id int64) {
		t.Helper()
		s.held.remember(id, now)
		if s.held.held(id, later) || !s.held.held(id, later) {
			t.Fatal("the first caller past the window claims the refresh, the next answers from memory")
		}
	}
	claim(3)
	if err := s.taken(3, seatlock.Result{State: seatlock.OnHold}, later); err != sale.ErrTicketHeld {
		t.Fatal(err)
	}
	if s.held.held(3, later) || !s.onHold.held(3, later) {
		t.Fatal("a seat found under a checkout hold answers ticket_held, not the claim's ticket_locked")
	}
	claim(4)
	if err := s.taken(4, seatlock.Result{State: seatlock.Acquired}, later); err != nil {
		t.Fatal(err)
	}
	if s.held.held(4, later) {
		t.Fatal("a seat this pod just locked must be asked of Redis again")
	}
}

// Issue 8: an order id derived from an Idempotency-Key is keyed with the
// sale's secret: stable for retries, different under another secret, and
// a UUIDv8 (not a name-based id anyone could compute).
func TestDerivedID_StableAndKeyedWithTheSaleSecret(t *testing.T) {
	a := &Service{secret: []byte("one secret")}
	b := &Service{secret: []byte("another secret")}
	req := Request{BuyerID: "alice", IdempotencyKey: "k1"}
	id := a.newOrderID(req)
	if id != a.newOrderID(req) {
		t.Fatal("the derivation must be stable for retries")
	}
	if id == b.newOrderID(req) {
		t.Fatal("another sale secret derived the same order id")
	}
	if id.Version() != 8 {
		t.Fatalf("a derived id is a UUIDv8, got version %d", id.Version())
	}
	if a.newHoldID(HoldRequest{BuyerID: "alice", IdempotencyKey: "k1"}) == id {
		t.Fatal("a hold id and an order id of one key must differ (domains)")
	}
}

// A hold's order id is a keyed permutation of the hold id: the order id
// leads back to its hold (random v4 and keyed v8 alike), it is a UUIDv8 of
// the RFC variant, and another sale secret gives another id.
func TestHoldOrderID_LeadsBackToItsHold_KeyedWithTheSaleSecret(t *testing.T) {
	a := &Service{secret: []byte("one secret")}
	b := &Service{secret: []byte("another secret")}
	for i := range 200 {
		hold := uuid.New()
		if i%2 == 1 {
			hold = a.newHoldID(HoldRequest{BuyerID: "alice", IdempotencyKey: fmt.Sprint("k", i)})
		}
		id := a.holdOrderID(hold)
		if id.Version() != 8 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("hold %s: order id %s is not a UUIDv8 of the RFC variant", hold, id)
		}
		if id == hold || id == b.holdOrderID(hold) || id != a.holdOrderID(hold) {
			t.Fatalf("hold %s: order id %s must differ from it and under another secret, and be stable", hold, id)
		}
		if c := a.holdsOfOrder(id); c[0] != hold && c[1] != hold {
			t.Fatalf("hold %s: order id %s leads back to %v", hold, id, c)
		}
		if c := b.holdsOfOrder(id); c[0] == hold || c[1] == hold {
			t.Fatalf("another secret leads order id %s back to its hold", id)
		}
	}
}

// TestHoldOrderID_PooledMACs_SameIDsAsOneMACPerRound: the rounds reuse the
// service's pooled HMACs (shared with derivedID), and the ids stay those of
// a fresh HMAC per round, as before the pool: a confirmation retried across
// a rolling upgrade must present the same order id.
func TestHoldOrderID_PooledMACs_SameIDsAsOneMACPerRound(t *testing.T) {
	secret := []byte("a sale secret")
	s := &Service{secret: secret}
	fresh := func(hold uuid.UUID) uuid.UUID {
		l, r := uuidHalves(hold)
		for round := range holdOrderRounds {
			m := hmac.New(sha256.New, secret)
			m.Write([]byte("\x00hold-order permutation\x00"))
			var in [9]byte
			in[0] = byte(round)
			binary.BigEndian.PutUint64(in[1:], r)
			m.Write(in[:])
			l, r = r, l^binary.BigEndian.Uint64(m.Sum(nil))&half61
		}
		return uuidFromHalves(l, r, 8)
	}
	for i := range 100 {
		hold := uuid.New()
		if i%2 == 1 {
			hold = s.newHoldID(HoldRequest{BuyerID: "bob", IdempotencyKey: fmt.Sprint("k", i)}) // a pooled MAC used between
		}
		if got, want := s.holdOrderID(hold), fresh(hold); got != want {
			t.Fatalf("hold %s: order id %s with pooled MACs, %s with one MAC per round", hold, got, want)
		}
		if c := s.holdsOfOrder(fresh(hold)); c[0] != hold && c[1] != hold {
			t.Fatalf("hold %s: its order id leads back to %v", hold, c)
		}
	}
}

// Every poll re-applies the cancellations of the last CancelReapplyWindow;
// only the first application of each may stamp lastCancel, or the sold-out
// shortcut stays off for up to twice the window after a cancellation.
func TestApplyLocal_ReapplicationDoesNotMoveLastCancel(t *testing.T) {
	s := &Service{metrics: newMetrics(prometheus.NewRegistry()), sold: newSoldSet(10),
		held: newHeldCache(20 * time.Millisecond), onHold: newHeldCache(20 * time.Millisecond)}
	order := uuid.New()
	s.applyLocal(order, 3, "alice")
	first := s.lastCancel.Load()
	if first == 0 || !s.recentlyCancelled() {
		t.Fatal("the first application must stamp lastCancel")
	}
	time.Sleep(5 * time.Millisecond)
	s.sold.add(3)
	s.applyLocal(order, 3, "alice") // the poll, the channel, a repeated cancel
	if got := s.lastCancel.Load(); got != first {
		t.Fatalf("a re-application moved lastCancel by %v", time.Duration(got-first))
	}
	if s.sold.has(3) {
		t.Fatal("a re-application must still clear the pod's memories (the race of cancel.go)")
	}
	s.applyLocal(uuid.New(), 4, "bob")
	if s.lastCancel.Load() == first {
		t.Fatal("another order's first application must stamp lastCancel")
	}
}
