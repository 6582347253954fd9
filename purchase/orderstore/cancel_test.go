package orderstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestCancelOrder_FreesSeatCountsAndKeys_OnceWithOneEvent(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	keyed, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "a", IdempotencyKey: "k1", MaxPerBuyer: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 4, OrderID: uuid.New(), BuyerID: "a", MaxPerBuyer: 2}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 5, OrderID: uuid.New(), BuyerID: "a", MaxPerBuyer: 2}); !errors.Is(err, ErrBuyerLimit) {
		t.Fatalf("a third seat under limit 2: want ErrBuyerLimit, got %v", err)
	}
	events := func() (n int) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_events WHERE type = 'order.cancelled'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var xidBefore string
	if err := s.pool.QueryRow(ctx, `SELECT changed_xid::text FROM tickets WHERE id = 3`).Scan(&xidBefore); err != nil {
		t.Fatal(err)
	}

	if _, _, err := s.CancelOrder(ctx, uuid.New(), "ops", "typo"); !errors.Is(err, ErrNotFound) || events() != 0 {
		t.Fatalf("an unknown order: want ErrNotFound and no event, got %v, %d events", err, events())
	}
	c, first, err := s.CancelOrder(ctx, keyed.ID, "ops@example", "chargeback")
	if err != nil || !first || c.OrderID != keyed.ID || c.TicketID != 3 || c.BuyerID != "a" || !c.PurchasedAt.Equal(keyed.PurchasedAt) ||
		c.CancelledBy != "ops@example" || c.Reason != "chargeback" || c.CancelledAt.Before(c.PurchasedAt) {
		t.Fatalf("cancel: %+v first=%v %v", c, first, err)
	}
	again, first, err := s.CancelOrder(ctx, keyed.ID, "someone else", "another reason")
	if err != nil || first || again != c {
		t.Fatalf("a repeat must answer the first cancellation unchanged: %+v first=%v %v, want %+v", again, first, err, c)
	}
	if n := events(); n != 1 {
		t.Fatalf("%d order.cancelled events, want 1", n)
	}
	var id, typ, at string
	if err := s.pool.QueryRow(ctx, `SELECT id, type, data->>'reason' FROM webhook_events
		WHERE type = 'order.cancelled'`).Scan(&id, &typ, &at); err != nil || id != "order.cancelled:"+keyed.ID.String() || at != "chargeback" {
		t.Fatalf("event id %q reason %q (%v)", id, at, err)
	}

	// The seat is free, in the feed too; the counts and the buyer's limit follow.
	if sold, held, err := s.TicketState(ctx, 3); err != nil || sold || held {
		t.Fatalf("seat 3 sold=%v held=%v %v, want free", sold, held, err)
	}
	var xidAfter string
	if err := s.pool.QueryRow(ctx, `SELECT changed_xid::text FROM tickets WHERE id = 3`).Scan(&xidAfter); err != nil || xidAfter == xidBefore {
		t.Fatalf("changed_xid %s → %s: the seat feed must see the cancel", xidBefore, xidAfter)
	}
	if n, err := s.Counts(ctx); err != nil || n.Sold != 1 {
		t.Fatalf("counts %+v %v, want 1 sold", n, err)
	}
	if n, err := s.CancelledCount(ctx); err != nil || n != 1 {
		t.Fatalf("cancelled count %d %v", n, err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 5, OrderID: uuid.New(), BuyerID: "a", MaxPerBuyer: 2}); err != nil {
		t.Fatalf("the buyer's count must drop: %v", err)
	}

	// The key does not buy again: not on another seat, not in a batch, not by lookup.
	var ce *CancelledError
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: keyed.ID, BuyerID: "a", IdempotencyKey: "k1"}); !errors.As(err, &ce) || ce.OrderID != keyed.ID {
		t.Fatalf("a retry of the cancelled key (one-order function): want CancelledError naming %s, got %v", keyed.ID, err)
	}
	res, err := s.confirmPurchases(ctx, []Purchase{
		{TicketID: 3, OrderID: keyed.ID, BuyerID: "a", IdempotencyKey: "k1"},
		{TicketID: 6, OrderID: uuid.New(), BuyerID: "b"},
	})
	if err != nil || res[0].outcome != "cancelled" || res[0].detail != keyed.ID.String() || res[1].outcome != "ok" {
		t.Fatalf("batch: %+v %v", res, err)
	}
	if _, err := s.OrderByKey(ctx, "a", "k1"); !errors.As(err, &ce) || ce.OrderID != keyed.ID || ce.BuyerID != "a" {
		t.Fatalf("OrderByKey: want CancelledError, got %v", err)
	}
	if _, err := s.Order(ctx, keyed.ID); !errors.As(err, &ce) {
		t.Fatalf("Order: want CancelledError, got %v", err)
	}
	if sold, _, _ := s.TicketState(ctx, 3); sold {
		t.Fatal("the refused retries must not have sold seat 3")
	}
	// Anyone else buys it.
	if o, _, err := s.Confirm(ctx, Purchase{TicketID: 3, OrderID: uuid.New(), BuyerID: "c"}); err != nil || o.TicketID != 3 {
		t.Fatalf("resale: %+v %v", o, err)
	}
	got, next, err := s.RecentCancellations(ctx, 0, time.Minute)
	if err != nil || len(got) != 1 || got[0].OrderID != keyed.ID || next != got[0].Seq {
		t.Fatalf("recent: %+v next %d %v", got, next, err)
	}
	if got, _, err := s.RecentCancellations(ctx, next, 0); err != nil || len(got) != 0 {
		t.Fatalf("past the cursor and the window: %+v %v", got, err)
	}
}

func TestCancelOrder_AHoldsOrder_ConfirmRetriesAnswerCancelled(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	h, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "a", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := s.ConfirmHold(ctx, h.ID, "a", uuid.New(), "pay-1")
	if err != nil {
		t.Fatal(err)
	}
	c, first, err := s.CancelOrder(ctx, o.ID, "ops", "refund")
	if err != nil || !first || c.HoldID != h.ID || c.PaymentRef != "pay-1" {
		t.Fatalf("cancel: %+v %v %v", c, first, err)
	}
	var ce *CancelledError
	if _, _, err := s.ConfirmHold(ctx, h.ID, "a", uuid.New(), "pay-2"); !errors.As(err, &ce) || ce.OrderID != o.ID {
		t.Fatalf("a repeated confirm (one): want CancelledError naming %s, got %v", o.ID, err)
	}
	res, err := s.confirmHolds(ctx, []holdConfirm{{hold: h.ID, buyer: "a", order: uuid.New(), paymentRef: "p"}, {hold: uuid.New(), buyer: "a", order: uuid.New(), paymentRef: "p"}})
	if err != nil || res[0].outcome != "cancelled" || res[0].refusal() == nil || !errors.As(res[0].refusal(), &ce) || ce.OrderID != o.ID {
		t.Fatalf("a repeated confirm (batch): %+v %v", res, err)
	}
	if sold, held, err := s.TicketState(ctx, 2); err != nil || sold || held {
		t.Fatalf("seat 2 sold=%v held=%v %v, want free", sold, held, err)
	}
}
