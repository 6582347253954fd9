package orderstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

func seeded(t *testing.T, tickets int64) *Store {
	t.Helper()
	s := newStore(t)
	if err := s.Seed(context.Background(), tickets); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHold_FenceConfirmReleaseAndCounts(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	h, replayed, err := s.PlaceHold(ctx, HoldRequest{TicketID: 3, HoldID: uuid.New(), BuyerID: "a", TTL: time.Minute})
	if err != nil || replayed || h.TicketID != 3 || time.Until(h.ExpiresAt) < 50*time.Second {
		t.Fatalf("hold: %+v %v %v", h, replayed, err)
	}
	if again, replayed, err := s.PlaceHold(ctx, HoldRequest{TicketID: 3, HoldID: h.ID, BuyerID: "a", TTL: time.Minute}); err != nil || !replayed || again.ExpiresAt != h.ExpiresAt {
		t.Fatalf("a retry of the same hold must replay it: %+v %v %v", again, replayed, err)
	}
	var held *HeldError
	if _, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 3, HoldID: uuid.New(), BuyerID: "b", TTL: time.Minute}); !errors.As(err, &held) || held.HoldID != h.ID || !held.Until.Equal(h.ExpiresAt.Truncate(time.Millisecond)) {
		t.Fatalf("second hold: want HeldError naming %s until %v, got %v %+v", h.ID, h.ExpiresAt, err, held)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "b"}); !errors.Is(err, ErrTicketHeld) {
		t.Fatalf("a purchase of a held seat: want ErrTicketHeld, got %v", err)
	}
	if sold, isHeld, err := s.TicketState(ctx, 3); err != nil || sold || !isHeld {
		t.Fatalf("ticket 3 state sold=%v held=%v %v, want held", sold, isHeld, err)
	}
	if n, err := s.Counts(ctx); err != nil || n != (Counts{Tickets: 10, Held: 1}) {
		t.Fatalf("counts %+v %v, want 1 held", n, err)
	}
	if ids, err := s.UnsoldFrom(ctx, 1, 4); err != nil || fmt.Sprint(ids) != "[1 2 4 5]" {
		t.Fatalf("the pool refill must skip the held seat: %v %v", ids, err)
	}

	if _, _, err := s.ConfirmHold(ctx, h.ID, "b", uuid.New(), "pay-1"); !errors.Is(err, ErrHoldNotFound) {
		t.Fatalf("another buyer's confirm: want ErrHoldNotFound, got %v", err)
	}
	order := uuid.New()
	o, replayed, err := s.ConfirmHold(ctx, h.ID, "a", order, "pay-1")
	if err != nil || replayed || o.ID != order || o.TicketID != 3 || o.HoldID != h.ID || o.PaymentRef != "pay-1" || !o.PurchasedAt.Before(h.ExpiresAt) {
		t.Fatalf("confirm: %+v %v %v", o, replayed, err)
	}
	if again, replayed, err := s.ConfirmHold(ctx, h.ID, "a", uuid.New(), "pay-2"); err != nil || !replayed || again.ID != order || again.PaymentRef != "pay-1" {
		t.Fatalf("a repeated confirm must replay the order: %+v %v %v", again, replayed, err)
	}
	if got, err := s.Order(ctx, order); err != nil || got.HoldID != h.ID || got.PaymentRef != "pay-1" {
		t.Fatalf("the order must name its hold: %+v %v", got, err)
	}
	if got, err := s.Hold(ctx, h.ID); err != nil || got.State != HoldConfirmed || got.OrderID != order {
		t.Fatalf("hold after confirm: %+v %v", got, err)
	}
	if _, released, err := s.ReleaseHold(ctx, h.ID); err != nil || released {
		t.Fatalf("releasing a confirmed hold must change nothing: %v %v", released, err)
	}
	if n, err := s.Counts(ctx); err != nil || n != (Counts{Tickets: 10, Sold: 1}) {
		t.Fatalf("counts %+v %v, want 1 sold, 0 held", n, err)
	}

	// Release frees the seat at once.
	r, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 4, HoldID: uuid.New(), BuyerID: "a", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if ticket, released, err := s.ReleaseHold(ctx, r.ID); err != nil || !released || ticket != 4 {
		t.Fatalf("release: %d %v %v", ticket, released, err)
	}
	if _, released, err := s.ReleaseHold(ctx, r.ID); err != nil || released {
		t.Fatalf("a second release must be a no-op: %v %v", released, err)
	}
	if _, _, err := s.ConfirmHold(ctx, r.ID, "a", uuid.New(), "p"); !errors.Is(err, ErrHoldExpired) {
		t.Fatalf("confirming a released hold: want ErrHoldExpired, got %v", err)
	}
	if got, err := s.Hold(ctx, r.ID); err != nil || got.State != HoldReleased {
		t.Fatalf("hold after release: %+v %v", got, err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 4, OrderID: uuid.New(), BuyerID: "b"}); err != nil {
		t.Fatalf("a released seat must sell: %v", err)
	}
	if _, _, err := s.ReleaseHold(ctx, uuid.New()); !errors.Is(err, ErrHoldNotFound) {
		t.Fatalf("release of no hold: want ErrHoldNotFound, got %v", err)
	}
	if _, err := s.Hold(ctx, uuid.New()); !errors.Is(err, ErrHoldNotFound) {
		t.Fatalf("no hold: want ErrHoldNotFound, got %v", err)
	}
	var sold *SoldError
	if _, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 3, HoldID: uuid.New(), BuyerID: "c", TTL: time.Minute}); !errors.As(err, &sold) || sold.OrderID != order {
		t.Fatalf("holding a sold seat: want SoldError naming %s, got %v", order, err)
	}
}

func TestHold_ExpiresLazily(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 5)
	h, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "a", TTL: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(h.ExpiresAt) + 10*time.Millisecond)
	if _, _, err := s.ConfirmHold(ctx, h.ID, "a", uuid.New(), "late"); !errors.Is(err, ErrHoldExpired) {
		t.Fatalf("confirm after expiry: want ErrHoldExpired, got %v", err)
	}
	if got, err := s.Hold(ctx, h.ID); err != nil || got.State != HoldExpired {
		t.Fatalf("hold state after expiry: %+v %v", got, err)
	}
	if n, err := s.Counts(ctx); err != nil || n.Held != 0 {
		t.Fatalf("an expired hold must not count: %+v %v", n, err)
	}
	// No write freed the seat: the next hold overwrites the expired one.
	h2, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "b", TTL: time.Minute})
	if err != nil {
		t.Fatalf("an expired hold's seat must be holdable: %v", err)
	}
	if _, released, err := s.ReleaseHold(ctx, h.ID); err != nil || released {
		t.Fatalf("releasing the expired hold must not free b's hold: %v %v", released, err)
	}
	if _, isHeld, _ := s.TicketState(ctx, 2); !isHeld {
		t.Fatal("b's hold was freed by releasing a's expired one")
	}
	if _, _, err := s.ConfirmHold(ctx, h2.ID, "b", uuid.New(), "p"); err != nil {
		t.Fatalf("b's confirm: %v", err)
	}
}

func TestHold_BuyerLimitCountsHoldsUnderConcurrency(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 100)
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 100, OrderID: uuid.New(), BuyerID: "g", MaxPerBuyer: 3}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var holds []Hold
	limited := 0
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			var err error
			var h Hold
			if i%2 == 0 {
				h, _, err = s.PlaceHold(ctx, HoldRequest{TicketID: int64(i) + 1, HoldID: uuid.New(), BuyerID: "g", TTL: time.Minute, MaxPerBuyer: 3})
			} else {
				_, _, err = s.Confirm(ctx, Purchase{TicketID: int64(i) + 1, OrderID: uuid.New(), BuyerID: "g", MaxPerBuyer: 3})
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, ErrBuyerLimit):
				limited++
			case err != nil:
				t.Error(err)
			case i%2 == 0:
				holds = append(holds, h)
			}
		})
	}
	wg.Wait()
	var orders int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE buyer_id = 'g'`).Scan(&orders); err != nil {
		t.Fatal(err)
	}
	if orders+len(holds) != 3 || limited != 38 {
		t.Fatalf("want orders + holds = 3 and 38 refused, got %d orders, %d holds, %d refused", orders, len(holds), limited)
	}
	var lim *LimitError
	_, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 50, HoldID: uuid.New(), BuyerID: "g", TTL: time.Minute, MaxPerBuyer: 3})
	if !errors.As(err, &lim) || lim.Orders != orders {
		t.Fatalf("want LimitError counting %d orders, got %v", orders, err)
	}
	// Confirming a hold at the limit is not refused: the order replaces it.
	for _, h := range holds {
		if _, _, err := s.ConfirmHold(ctx, h.ID, "g", uuid.New(), "p"); err != nil {
			t.Fatalf("confirming a hold at the limit: %v", err)
		}
	}
	// Releasing frees a place under the limit.
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM orders WHERE buyer_id = 'g'`).Scan(&orders); err != nil || orders != 3 {
		t.Fatalf("want 3 orders, got %d %v", orders, err)
	}
	s2 := seeded(t, 10)
	a, _, _ := s2.PlaceHold(ctx, HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: "h", TTL: time.Minute, MaxPerBuyer: 1})
	if _, _, err := s2.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "h", TTL: time.Minute, MaxPerBuyer: 1}); !errors.Is(err, ErrBuyerLimit) {
		t.Fatalf("second hold at limit 1: want ErrBuyerLimit, got %v", err)
	}
	if _, _, err := s2.ReleaseHold(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s2.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "h", TTL: time.Minute, MaxPerBuyer: 1}); err != nil {
		t.Fatalf("after releasing, a hold fits under the limit again: %v", err)
	}
}

func TestHold_StormOnOneSeat_OneHold(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 3)
	var mu sync.Mutex
	won, held := 0, 0
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			_, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: fmt.Sprint("b", i), TTL: time.Minute})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, ErrTicketHeld):
				held++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	var rows int
	_ = s.pool.QueryRow(ctx, `SELECT count(*) FROM holds`).Scan(&rows)
	if won != 1 || held != 49 || rows != 1 {
		t.Fatalf("want 1 hold and 49 ErrTicketHeld, got %d, %d (%d rows)", won, held, rows)
	}
}

func TestHold_ChangedXIDWrittenByEveryStateChange(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 5)
	xid := func(id int64) (v string) {
		_ = s.pool.QueryRow(ctx, `SELECT coalesce(changed_xid::text, '') FROM tickets WHERE id = $1`, id).Scan(&v)
		return v
	}
	last := map[int64]string{}
	step := func(what string, id int64, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if v := xid(id); v == "" || v == last[id] {
			t.Fatalf("%s did not write changed_xid of seat %d (%q)", what, id, v)
		} else {
			last[id] = v
		}
	}
	h, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: "a", TTL: time.Minute})
	step("hold", 1, err)
	_, _, err = s.ReleaseHold(ctx, h.ID)
	step("release", 1, err)
	h, _, err = s.PlaceHold(ctx, HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: "a", TTL: time.Minute})
	step("hold again", 1, err)
	_, _, err = s.ConfirmHold(ctx, h.ID, "a", uuid.New(), "p")
	step("confirm", 1, err)
	_, _, err = s.Confirm(ctx, Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "b"})
	step("purchase", 2, err)
}

func TestHold_ConcurrentRetriesOfOneHoldID_OnDifferentSeats_OneHold(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 40)
	id := uuid.New()
	// The first attempt has placed the hold on seat 1 but not committed.
	first, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	if _, err := first.Exec(ctx, `SELECT * FROM hold_seat(1, $1, 'k', 60000, 0)`, id); err != nil {
		t.Fatal(err)
	}
	// A retry on seat 2 waits on the hold's primary key...
	type result struct {
		h        Hold
		replayed bool
		err      error
	}
	retry := make(chan result)
	go func() {
		h, replayed, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: id, BuyerID: "k", TTL: time.Minute})
		retry <- result{h, replayed, err}
	}()
	time.Sleep(200 * time.Millisecond)
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// ...and, once the first commits, answers its hold.
	r := <-retry
	if r.err != nil || !r.replayed || r.h.ID != id || r.h.TicketID != 1 {
		t.Fatalf("the retry must replay the first attempt's hold on seat 1, got %+v", r)
	}
	var rows, held int
	_ = s.pool.QueryRow(ctx, `SELECT count(*), (SELECT count(*) FROM tickets WHERE held_until > now()) FROM holds`).Scan(&rows, &held)
	if rows != 1 || held != 1 {
		t.Fatalf("want one hold on one seat, got %d holds, %d seats held", rows, held)
	}
}
