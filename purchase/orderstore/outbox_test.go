package orderstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

// The outbox of migration 00011: every committed order is an
// order.confirmed event (a cancelled one too, from its cancellation), each
// cancellation an order.cancelled event, with the order's fields; a refused
// confirmation is none. No row is written for an event: the order row
// carries its transaction's xid.
func TestOutbox_EveryCommittedOrderAndCancellationIsOneEvent(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 40)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var ids []uuid.UUID
	for seat := int64(1); seat <= 15; seat++ {
		wg.Go(func() {
			o, _, err := s.Confirm(ctx, Purchase{TicketID: seat, OrderID: uuid.New(), BuyerID: fmt.Sprintf("b%d", seat%5), MaxPerBuyer: 3})
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
	// Refusals: the seat is sold, the buyer is at the limit.
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "x"}); !errors.Is(err, ErrTicketSold) {
		t.Fatalf("seat 1 again: want ErrTicketSold, got %v", err)
	}
	if _, _, err := s.Confirm(ctx, Purchase{TicketID: 20, OrderID: uuid.New(), BuyerID: "b0", MaxPerBuyer: 3}); !errors.Is(err, ErrBuyerLimit) {
		t.Fatalf("b0's fourth: want ErrBuyerLimit, got %v", err)
	}
	if _, _, err := s.CancelOrder(ctx, ids[0], "ops", "refund"); err != nil {
		t.Fatal(err)
	}

	var confirmed, matched, cancelled, noXid int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = 'order.confirmed'),
			count(*) FILTER (WHERE type = 'order.confirmed' AND id::uuid = ANY($1)),
			count(*) FILTER (WHERE type = 'order.cancelled' AND id = 'order.cancelled:' || $2),
			count(*) FILTER (WHERE xid IS NULL)
		FROM webhook_events`, ids, ids[0].String()).Scan(&confirmed, &matched, &cancelled, &noXid); err != nil {
		t.Fatal(err)
	}
	if confirmed != len(ids) || matched != len(ids) || cancelled != 1 || noXid != 0 {
		t.Fatalf("events: %d confirmed (%d of the %d orders), %d cancelled (want 1), %d without xid",
			confirmed, matched, len(ids), cancelled, noXid)
	}
	// The data is the order's, for the cancelled order too.
	var bad int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_events e
		LEFT JOIN (SELECT id, ticket_id, buyer_id FROM orders UNION ALL SELECT order_id, ticket_id, buyer_id FROM order_cancellations) o
		  ON o.id::text = e.data->>'orderId'
		WHERE e.type LIKE 'order.%' AND (o.id IS NULL OR (e.data->>'ticketId')::bigint <> o.ticket_id OR e.data->>'buyerId' <> o.buyer_id)`).Scan(&bad); err != nil || bad != 0 {
		t.Fatalf("%d events whose data is not their order's (%v)", bad, err)
	}
	var rows int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM river_job`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("want no river_job row for an event, got %d (%v)", rows, err)
	}
}

// The upgrade to 00011 and its way back: an event still waiting in
// river_job (00007's outbox) becomes an event of the cursor, and one
// pending at the cursor goes back to river_job on Down; nothing is lost,
// nothing is left behind.
func TestOutbox_UpgradeFromRiverAndBack_PendingEventsCarried(t *testing.T) {
	ctx := context.Background()
	s := seeded(t, 10)
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, mustSub(migrations, "migrations"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	// The previous version: the trigger writes the event into river_job.
	before, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	legacy := func() (n int) {
		t.Helper()
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'flux_order_event' AND state = 'available'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := legacy(); n != 1 {
		t.Fatalf("at 00010 the order's event must be a river_job row: %d", n)
	}
	if _, err := p.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	ids := func() map[string]bool {
		t.Helper()
		rows, err := s.pool.Query(ctx, `SELECT e.id FROM webhook_events e, webhook_cursor w
			WHERE ROW(e.xid, e.src, e.key COLLATE "C") > ROW(w.xid, w.src, w.key)`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			out[id] = true
		}
		return out
	}
	if got := ids(); len(got) != 1 || !got[before.ID.String()] || legacy() != 0 {
		t.Fatalf("after 00011: pending events %v (want the order %s), %d left in river_job", got, before.ID, legacy())
	}
	after, _, err := s.Confirm(ctx, Purchase{TicketID: 2, OrderID: uuid.New(), BuyerID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 2 || !got[after.ID.String()] {
		t.Fatalf("a new order must be pending too: %v", got)
	}
	// Down: both pending events go back to river_job, numbered anew.
	if _, err := p.DownTo(ctx, 10); err != nil {
		t.Fatal(err)
	}
	if n := legacy(); n != 2 {
		t.Fatalf("after Down: %d events in river_job, want the 2 pending", n)
	}
	if _, err := p.UpTo(ctx, 11); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 2 || legacy() != 0 {
		t.Fatalf("up again: pending %v, %d left in river_job", got, legacy())
	}
}
