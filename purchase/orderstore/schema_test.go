package orderstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/google/uuid"
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
