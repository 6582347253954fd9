package orderstore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
)

// The outbox's switch (migration 00010): off, a batch of confirmations and
// a cancellation write no event rows; on, one per order and one per
// cancellation, as in 00007 and 00009. The table keeps one row.
func TestOutboxSwitch_OffNoEventRows_OnOnePerOrderAndCancellation(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 40)
	var on bool
	if err := s.pool.QueryRow(ctx, `SELECT outbox_on()`).Scan(&on); err != nil || !on {
		t.Fatalf("the switch must start on (the previous version's behaviour): %v %v", on, err)
	}
	events := func(typ string) (n int) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'flux_order_event' AND args->>'type' = $1`, typ).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// buy confirms seats from..to at once (the group commit batches them).
	buy := func(from, to int64) (ids []uuid.UUID) {
		t.Helper()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for seat := from; seat <= to; seat++ {
			wg.Go(func() {
				o, _, err := s.Confirm(ctx, Purchase{TicketID: seat, OrderID: uuid.New(), BuyerID: fmt.Sprintf("b%d", seat)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				ids = append(ids, o.ID)
				mu.Unlock()
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		return ids
	}

	if _, err := s.pool.Exec(ctx, `UPDATE outbox_switch SET enabled = false`); err != nil {
		t.Fatal(err)
	}
	off := buy(1, 15)
	if _, _, err := s.CancelOrder(ctx, off[0], "ops", "refund"); err != nil {
		t.Fatal(err)
	}
	var rows int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("switch off: want no river_job row, got %d (%v)", rows, err)
	}

	if _, err := s.pool.Exec(ctx, `UPDATE outbox_switch SET enabled = true`); err != nil {
		t.Fatal(err)
	}
	onIDs := buy(16, 30)
	if _, _, err := s.CancelOrder(ctx, onIDs[0], "ops", "refund"); err != nil {
		t.Fatal(err)
	}
	// A cancellation of an order confirmed while off: its cancellation
	// happens while on, so it has its event.
	if _, _, err := s.CancelOrder(ctx, off[1], "ops", "refund"); err != nil {
		t.Fatal(err)
	}
	if n := events("order.confirmed"); n != len(onIDs) {
		t.Fatalf("switch on: %d order.confirmed events for %d orders", n, len(onIDs))
	}
	var matched int
	if err := s.pool.QueryRow(ctx, `SELECT count(DISTINCT o.id) FROM river_job j JOIN unnest($1::uuid[]) o(id) ON j.args->>'id' = o.id::text
		WHERE j.kind = 'flux_order_event'`, onIDs).Scan(&matched); err != nil || matched != len(onIDs) {
		t.Fatalf("want one event per order confirmed while on, matched %d of %d (%v)", matched, len(onIDs), err)
	}
	if n := events("order.cancelled"); n != 2 {
		t.Fatalf("switch on: %d order.cancelled events, want 2", n)
	}

	// One row, always.
	if _, err := s.pool.Exec(ctx, `INSERT INTO outbox_switch (enabled) VALUES (false)`); err == nil {
		t.Fatal("a second row of outbox_switch was accepted")
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO outbox_switch (one, enabled) VALUES (false, false)`); err == nil {
		t.Fatal("a row with one = false was accepted")
	}
}
