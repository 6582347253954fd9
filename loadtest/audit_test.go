package loadtest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

var dbSeq atomic.Int64

// auditedSale is a sale's database with the real schema, no server.
type auditedSale struct {
	t     *testing.T
	url   string
	store *orderstore.Store
}

func newAuditedSale(t *testing.T, tickets int64) *auditedSale {
	t.Helper()
	ctx := context.Background()
	url, err := purchasetest.Postgres().CreateDatabase(ctx, fmt.Sprintf("audit_%d", dbSeq.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	store, err := orderstore.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store.Seed(ctx, tickets); err != nil {
		t.Fatal(err)
	}
	return &auditedSale{t: t, url: url, store: store}
}

// sell confirms one order per ticket the way the purchase service does.
func (s *auditedSale) sell(tickets ...int64) []Order {
	s.t.Helper()
	var out []Order
	for _, ticket := range tickets {
		o, _, err := s.store.Confirm(context.Background(), orderstore.Purchase{TicketID: ticket, OrderID: uuid.New(), BuyerID: "buyer-1"})
		if err != nil {
			s.t.Fatalf("sell ticket %d: %v", ticket, err)
		}
		out = append(out, Order{ID: o.ID, TicketID: o.TicketID})
	}
	return out
}

func (s *auditedSale) exec(sql string, args ...any) {
	s.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.url)
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		s.t.Fatalf("%s: %v", sql, err)
	}
}

// plantDoubleSale gives ticket a second order, as a broken fence would:
// the unique constraint has to go first.
func (s *auditedSale) plantDoubleSale(ticket int64) {
	s.exec(`ALTER TABLE orders DROP CONSTRAINT orders_ticket_id_key`)
	s.exec(`INSERT INTO orders (id, ticket_id, buyer_id) VALUES (gen_random_uuid(), $1, 'mallory')`, ticket)
}

// availability is what GET /v1/availability answers: the sold counter.
func (s *auditedSale) availability(ctx context.Context) (Availability, error) {
	n, err := s.store.Counts(ctx)
	return Availability{Tickets: n.Tickets, Sold: n.Sold, Held: n.Held, Available: n.Tickets - n.Sold - n.Held}, err
}

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestAudit_CatchesWhatIsWrongAndPassesWhatIsRight(t *testing.T) {
	cases := []struct {
		name string
		// before runs before the auditor counts; during makes the test's
		// orders and returns what the client was answered 201.
		before       func(s *auditedSale)
		during       func(s *auditedSale) []Order
		availability func(s *auditedSale) func(context.Context) (Availability, error)
		exact        bool
		wantProblems []string // empty: the audit passes
	}{
		{
			name:   "a consistent sale passes",
			during: func(s *auditedSale) []Order { return s.sell(seq(1, 20)...) },
			exact:  true,
		},
		{
			name:   "orders sold before the test are not counted as the test's",
			before: func(s *auditedSale) { s.sell(seq(30, 34)...) },
			during: func(s *auditedSale) []Order { return s.sell(seq(1, 10)...) },
			exact:  true,
		},
		{
			name: "a planted double sale fails, naming the ticket",
			during: func(s *auditedSale) []Order {
				created := s.sell(seq(1, 10)...)
				s.plantDoubleSale(7)
				return created
			},
			exact:        true,
			wantProblems: []string{"double sale", "ticket 7 has 2 orders"},
		},
		{
			name: "a planted double sale fails even when the audit is not exact",
			during: func(s *auditedSale) []Order {
				created := s.sell(seq(1, 10)...)
				s.plantDoubleSale(3)
				return created
			},
			wantProblems: []string{"ticket 3 has 2 orders"},
		},
		{
			name: "two 201s for one ticket fail, naming the ticket",
			during: func(s *auditedSale) []Order {
				return append(s.sell(seq(1, 5)...), Order{ID: uuid.New(), TicketID: 4})
			},
			exact:        true,
			wantProblems: []string{"ticket 4 was answered 201 for orders"},
		},
		{
			name: "a 201 without its order row fails, naming the order",
			during: func(s *auditedSale) []Order {
				return append(s.sell(seq(1, 5)...), Order{ID: uuid.MustParse("0190c7b0-0000-7000-8000-00000000abcd"), TicketID: 9})
			},
			exact:        true,
			wantProblems: []string{"order 0190c7b0-0000-7000-8000-00000000abcd (ticket 9) does not exist", "only 5 new orders"},
		},
		{
			name: "a 201 naming another ticket than its row fails",
			during: func(s *auditedSale) []Order {
				created := s.sell(seq(1, 5)...)
				created[2].TicketID = 50
				return created
			},
			exact:        true,
			wantProblems: []string{"answered for ticket 50 but is for ticket 3"},
		},
		{
			name: "an order whose answer was lost fails an exact audit",
			during: func(s *auditedSale) []Order {
				return s.sell(seq(1, 10)...)[:9]
			},
			exact:        true,
			wantProblems: []string{"10 new orders in Postgres but 9 answered 201"},
		},
		{
			name: "an order whose answer was lost passes a non-exact audit",
			during: func(s *auditedSale) []Order {
				return s.sell(seq(1, 10)...)[:9]
			},
		},
		{
			name:         "an unreadable 201 fails",
			during:       func(s *auditedSale) []Order { return append(s.sell(1), Order{}) },
			exact:        true,
			wantProblems: []string{"1 answers 201 had no readable orderId"},
		},
		{
			name:   "availability disagreeing with the orders fails",
			during: func(s *auditedSale) []Order { return s.sell(seq(1, 3)...) },
			availability: func(*auditedSale) func(context.Context) (Availability, error) {
				return func(context.Context) (Availability, error) { return Availability{Tickets: 100, Sold: 4}, nil }
			},
			exact:        true,
			wantProblems: []string{"GET /v1/availability says sold=4 but Postgres has 3 orders"},
		},
		{
			name:   "availability unreachable fails",
			during: func(s *auditedSale) []Order { return s.sell(1) },
			availability: func(*auditedSale) func(context.Context) (Availability, error) {
				return func(context.Context) (Availability, error) { return Availability{}, errors.New("connection refused") }
			},
			exact:        true,
			wantProblems: []string{"availability: connection refused"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := t.Context()
			sale := newAuditedSale(t, 100)
			if c.before != nil {
				c.before(sale)
			}
			auditor, err := NewAuditor(ctx, sale.url)
			if err != nil {
				t.Fatal(err)
			}
			created := c.during(sale)
			availability := sale.availability
			if c.availability != nil {
				availability = c.availability(sale)
			}
			r := auditor.Check(ctx, created, availability, c.exact)
			problems := strings.Join(r.Problems, " | ")
			if len(c.wantProblems) == 0 {
				if !r.OK || problems != "" {
					t.Fatalf("expected the audit to pass, got %+v", r)
				}
				return
			}
			if r.OK {
				t.Fatalf("expected the audit to fail with %q, got a pass: %+v", c.wantProblems, r)
			}
			for _, want := range c.wantProblems {
				if !strings.Contains(problems, want) {
					t.Fatalf("expected a problem containing %q, got %q", want, problems)
				}
			}
		})
	}
}

func TestAudit_ReportCountsTheSale(t *testing.T) {
	sale := newAuditedSale(t, 100)
	sale.sell(seq(90, 91)...)
	auditor, err := NewAuditor(t.Context(), sale.url)
	if err != nil {
		t.Fatal(err)
	}
	r := auditor.Check(t.Context(), sale.sell(seq(1, 3)...), sale.availability, true)
	want := AuditReport{OK: true, Exact: true, Created: 3, OrdersBefore: 2, Orders: 5, NewOrders: 3, DistinctTickets: 5, SoldTickets: 5, AvailabilitySold: 5}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Fatalf("expected %+v, got %+v", want, r)
	}
	if text := r.text(); !strings.Contains(text, "PASS: 3 answered 201, 3 new orders") {
		t.Fatalf("expected a one-line PASS naming the counts, got %q", text)
	}
}

func TestNewAuditor_WrongDatabaseFailsBeforeTheLoad(t *testing.T) {
	_, err := NewAuditor(t.Context(), purchasetest.Postgres().URL("no_such_database"))
	if err == nil || !strings.HasPrefix(err.Error(), "--audit-database-url: ") {
		t.Fatalf("expected an error naming --audit-database-url, got %v", err)
	}
}

func TestCheckDatabaseURL_RefusesWhatIsNotPostgres(t *testing.T) {
	cases := []struct {
		url string
		ok  bool
	}{
		{"postgres://user:secret@127.0.0.1:5432/demo", true},
		{"postgresql://127.0.0.1/demo?sslmode=disable", true},
		{"mysql://user:secret@host/db", false},
		{"postgres://user:secret@host:notaport/db", false},
	}
	for _, c := range cases {
		err := CheckDatabaseURL(c.url)
		if (err == nil) != c.ok {
			t.Fatalf("%s: expected ok=%v, got %v", c.url, c.ok, err)
		}
		if err != nil && (strings.Contains(err.Error(), "secret") || !strings.HasPrefix(err.Error(), "--audit-database-url: ")) {
			t.Fatalf("%s: expected an error naming the flag without the password, got %q", c.url, err)
		}
	}
}
