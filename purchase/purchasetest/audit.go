package purchasetest

import (
	"context"
	"testing"

	"github.com/flux-order/flux-order/purchase/checkout"
)

// Audit is the truth in Postgres.
type Audit struct {
	Orders, DistinctTickets, Sold int64
	ByOrderID                     map[string]int64
}

// Audit reads the sale's orders and sold seats.
func (s *Sale) Audit() Audit {
	s.T.Helper()
	ctx := context.Background()
	a := Audit{ByOrderID: map[string]int64{}}
	if err := s.DB.QueryRow(ctx, `SELECT count(*), count(DISTINCT ticket_id), (SELECT count(*) FROM tickets WHERE sold) FROM orders`).
		Scan(&a.Orders, &a.DistinctTickets, &a.Sold); err != nil {
		s.T.Fatal(err)
	}
	rows, err := s.DB.Query(ctx, `SELECT id::text, ticket_id FROM orders`)
	if err != nil {
		s.T.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var ticket int64
		if err := rows.Scan(&id, &ticket); err != nil {
			s.T.Fatal(err)
		}
		a.ByOrderID[id] = ticket
	}
	return a
}

// CheckAgainst fails the test unless every 201 has its order in Postgres,
// no seat has two orders, and the counters agree. exact also requires every
// order to have been answered 201 (false where an outage may leave a
// committed order whose answer was a 503).
func (a Audit) CheckAgainst(t testing.TB, created []checkout.Order, exact bool) {
	t.Helper()
	if a.Orders != a.DistinctTickets {
		t.Fatalf("double sale: %d orders for %d distinct tickets", a.Orders, a.DistinctTickets)
	}
	if a.Sold != a.Orders {
		t.Fatalf("%d tickets marked sold but %d orders", a.Sold, a.Orders)
	}
	seen := map[int64]string{}
	for _, o := range created {
		if prev, dup := seen[o.TicketID]; dup && prev != o.ID.String() {
			t.Fatalf("ticket %d answered 201 to two orders: %s and %s", o.TicketID, prev, o.ID)
		}
		seen[o.TicketID] = o.ID.String()
		if tk, ok := a.ByOrderID[o.ID.String()]; !ok || tk != o.TicketID {
			t.Fatalf("201 for order %s (ticket %d) has no matching order row (found ticket %d, %v)", o.ID, o.TicketID, tk, ok)
		}
	}
	if exact && int64(len(seen)) != a.Orders {
		t.Fatalf("%d distinct orders answered 201, but Postgres has %d orders", len(seen), a.Orders)
	}
}
