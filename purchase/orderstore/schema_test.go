package orderstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/flux-order/flux-order/internal/testservers"
)

func TestOpenInSchema_TwoSalesShareOneDatabase_EachSellsItsSeatOnce(t *testing.T) {
	ctx := context.Background()
	url, err := pg.CreateDatabase(ctx, fmt.Sprintf("shared_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	open := func(schema string, tickets int64) *Store {
		s, err := OpenInSchema(ctx, url, schema)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("migrate %s: %v", schema, err)
		}
		if err := s.Seed(ctx, tickets); err != nil {
			t.Fatalf("seed %s: %v", schema, err)
		}
		return s
	}
	a, b := open("fo_a_1", 10), open("fo-b_2", 20) // a name that needs quoting too
	for name, s := range map[string]*Store{"a": a, "b": b} {
		if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: name}); err != nil {
			t.Fatalf("sale %s, seat 1: %v", name, err)
		}
		if _, _, err := s.Confirm(ctx, Purchase{TicketID: 1, OrderID: uuid.New(), BuyerID: name + "2"}); !errors.Is(err, ErrTicketSold) {
			t.Fatalf("sale %s, seat 1 again: want ErrTicketSold, got %v", name, err)
		}
	}
	for name, c := range map[string]struct {
		s       *Store
		tickets int64
	}{"a": {a, 10}, "b": {b, 20}} {
		if n, err := c.s.Counts(ctx); err != nil || n.Tickets != c.tickets || n.Sold != 1 {
			t.Errorf("sale %s: tickets %d sold %d (%v); want %d and 1: the inventories must not mix", name, n.Tickets, n.Sold, err, c.tickets)
		}
	}
}

// planFree are the PL/pgSQL functions that read no table: they need no
// planner settings (migration 00013).
var planFree = map[string]bool{"commit_before": true, "outbox_switch_on": true}

// Every PL/pgSQL function of the schema that reads tables plans for index
// lookups (migration 00013): a redefinition (CREATE OR REPLACE FUNCTION)
// that forgot the settings would bring back the sequential scans a fresh
// sale's plans made.
func TestSchema_FenceFunctionsPlanForIndexLookups(t *testing.T) {
	s := newStore(t)
	rows, err := s.pool.Query(context.Background(), `SELECT p.proname, coalesce(p.proconfig, '{}')
		FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
		WHERE p.pronamespace = current_schema()::regnamespace AND l.lanname = 'plpgsql'`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		Name   string
		Config []string
	}])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) < 10 {
		t.Fatalf("%d PL/pgSQL functions: the query missed the schema's", len(got))
	}
	for _, f := range got {
		if planFree[f.Name] {
			continue
		}
		for _, want := range []string{"enable_seqscan=off", "enable_hashjoin=off", "enable_mergejoin=off"} {
			if !slices.Contains(f.Config, want) {
				t.Errorf("%s: settings %v lack %s (repeat migration 00013's SET clauses)", f.Name, f.Config, want)
			}
		}
	}
}

// A fresh sale's tables are empty and unanalyzed when its pods first plan
// the fence functions' statements, which every connection keeps for its
// life: those plans must look rows up by index, not scan orders, buyers
// or holds, which grow by every batch (each scan cost a batch a pass over
// every order so far). Counted by PostgreSQL's own statistics, from
// connections that planned on the empty tables and exited (so that their
// counts are flushed) before they were read.
func TestFreshSale_BatchesNeverScanTheGrowingTables(t *testing.T) {
	ctx := context.Background()
	dbName := fmt.Sprintf("fresh_%d", dbSeq.Add(1))
	url, err := pg.CreateDatabase(ctx, dbName)
	if err != nil {
		t.Fatal(err)
	}
	setup, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.Migrate(ctx); err == nil {
		err = setup.Seed(ctx, 400)
	}
	setup.Close()
	if err != nil {
		t.Fatal(err)
	}
	type counts struct{ seq, idx int64 }
	scans := func() map[string]counts {
		t.Helper()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `SELECT relname::text, seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables
			WHERE relname IN ('orders', 'buyers', 'holds', 'order_cancellations')`)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]counts{}
		for rows.Next() {
			var name string
			var c counts
			if err := rows.Scan(&name, &c.seq, &c.idx); err != nil {
				t.Fatal(err)
			}
			n[name] = c
		}
		if err := rows.Err(); err != nil || len(n) != 4 {
			t.Fatalf("statistics of %v: %v", n, err)
		}
		return n
	}
	before := scans()

	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	seat := int64(1) // seat 1 is every batch's last member
	next := func() int64 { seat++; return seat }
	// Enough executions of each statement for PostgreSQL to settle on a
	// generic plan (after five), in batches and alone, keyed and not,
	// under a buyer limit; replays, refusals, holds, their confirmations
	// and a cancellation.
	for round := range 12 {
		batch := make([]Purchase, 6)
		for i := range batch {
			batch[i] = Purchase{TicketID: next(), OrderID: uuid.New(), BuyerID: fmt.Sprintf("b%d", i), MaxPerBuyer: 100}
			if i%2 == 0 {
				batch[i].IdempotencyKey = fmt.Sprintf("k%d-%d", round, i)
			}
		}
		batch[5].TicketID = 1 // sold from the second round on
		if _, err := s.confirmPurchases(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if _, err := s.confirmPurchases(ctx, batch[:1]); err != nil { // replayed
			t.Fatal(err)
		}
		if _, _, err := s.Confirm(ctx, Purchase{TicketID: next(), OrderID: uuid.New(), BuyerID: "one", IdempotencyKey: fmt.Sprintf("one-%d", round), MaxPerBuyer: 100}); err != nil {
			t.Fatal(err)
		}
		holds := []HoldRequest{{TicketID: next(), HoldID: uuid.New(), BuyerID: "h1", TTL: time.Minute, MaxPerBuyer: 100},
			{TicketID: next(), HoldID: uuid.New(), BuyerID: "h2", TTL: time.Minute, MaxPerBuyer: 100}}
		if _, err := s.holdSeats(ctx, holds); err != nil {
			t.Fatal(err)
		}
		if _, err := s.confirmHolds(ctx, []holdConfirm{{hold: holds[0].HoldID, order: uuid.New(), buyer: "h1"},
			{hold: holds[1].HoldID, order: uuid.New(), buyer: "h2"}}); err != nil {
			t.Fatal(err)
		}
		h, _, err := s.PlaceHold(ctx, HoldRequest{TicketID: next(), HoldID: uuid.New(), BuyerID: "h3", TTL: time.Minute, MaxPerBuyer: 100})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ConfirmHold(ctx, h.ID, "h3", uuid.New(), ""); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.CancelOrder(ctx, batch[1].OrderID, "test", "refund"); err != nil {
			t.Fatal(err)
		}
	}
	s.Close() // its backends exit, flushing their statistics as they go
	testservers.Eventually(t, 10*time.Second, 50*time.Millisecond, "the store's sessions to end", func() error {
		conn, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, dbName).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	after := scans()
	for name, n := range after {
		if d := n.seq - before[name].seq; d != 0 {
			t.Errorf("%d sequential scans of %s", d, name)
		}
	}
	if after["orders"].idx <= before["orders"].idx {
		t.Fatalf("orders: index scans %d → %d: the statistics were read before they were flushed", before["orders"].idx, after["orders"].idx)
	}
}
