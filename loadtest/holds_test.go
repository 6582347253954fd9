package loadtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

func TestHoldConfirmScenario_SellsOutThroughHoldsConfirmsReleasesExpiries_Audited(t *testing.T) {
	const seats = 60
	ctx := t.Context()
	url, dbURL := startSale(t, seats, func(c *purchase.Config) { c.HoldTTL = time.Second })
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: HoldConfirm, Seat: 1, Buyers: 500, Concurrency: 16, Duration: time.Minute,
		UntilSoldOut: true, Timeout: 10 * time.Second, ThinkTime: 100 * time.Millisecond, ConfirmShare: 0.5, ReleaseShare: 0.5}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	s, h := res.Summary, res.Summary.Holds
	t.Logf("%s", h.text())
	if h == nil || s.StoppedBy != stopSoldOut || s.Count(Created) != seats || h.Confirmed != seats {
		t.Fatalf("want every seat sold through a confirmed hold, stopped by sold-out; got stopped by %s, %d created, %+v", s.StoppedBy, s.Count(Created), h)
	}
	if h.Released == 0 || h.LetExpire == 0 || h.Errors != 0 || h.Held < seats+h.Released+h.LetExpire-16 {
		t.Fatalf("want releases and expiries among the checkouts, no errors; got %+v", h)
	}
	r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true)
	if !r.OK || r.NewOrders != seats || r.Holds < h.Held {
		t.Fatalf("want the audit to pass with %d new orders and every hold checked, got %+v", seats, r)
	}
}

func TestHoldConfirmScenario_ThinkingPastTheHold_ConfirmsGet410AndNoOrder(t *testing.T) {
	ctx := t.Context()
	url, dbURL := startSale(t, 10, func(c *purchase.Config) { c.HoldTTL = time.Second })
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: HoldConfirm, Seat: 1, Seats: 10, Buyers: 5, Concurrency: 5, Requests: 5,
		Timeout: 10 * time.Second, ThinkTime: 1200 * time.Millisecond, ConfirmShare: 1}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Summary.Holds; h.Held != 5 || h.ConfirmExpired != 5 || res.Summary.Count(Created) != 0 {
		t.Fatalf("want 5 holds whose confirms all got 410, got %+v", h)
	}
	if r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true); !r.OK || r.NewOrders != 0 || r.Holds != 5 {
		t.Fatalf("want a passing audit with no order and 5 holds, got %+v", r)
	}
}

func TestAudit_Holds_CatchesAnOrderFromAnExpiredHoldAndASaleDuringAHold(t *testing.T) {
	ctx := t.Context()
	sale := newAuditedSale(t, 20)
	auditor, err := NewAuditor(ctx, sale.url)
	if err != nil {
		t.Fatal(err)
	}
	// A correct checkout passes.
	h, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 1, HoldID: uuid.New(), BuyerID: "buyer-1", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	o, _, err := sale.store.ConfirmHold(ctx, h.ID, "buyer-1", uuid.New(), "pay")
	if err != nil {
		t.Fatal(err)
	}
	created := []Order{{ID: o.ID, TicketID: 1}}
	if r := auditor.Check(ctx, created, sale.availability, true); !r.OK || r.Holds != 1 {
		t.Fatalf("a confirmed hold must pass: %+v", r)
	}

	// A confirm that ignored the expiry, as a broken confirm_hold would.
	late, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 2, HoldID: uuid.New(), BuyerID: "buyer-2", TTL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Its order must come after the expiry by the database's clock, which
	// stamps the order's purchased_at.
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the 100 ms hold expired", func() error {
		h, err := sale.store.Hold(ctx, late.ID)
		if err == nil && h.State != orderstore.HoldExpired {
			err = fmt.Errorf("hold %s", h.State)
		}
		return err
	})
	lateOrder := uuid.New()
	sale.plantSale(2, lateOrder, "buyer-2", &late.ID)
	sale.exec(`UPDATE holds SET state = 'confirmed', order_id = $1 WHERE id = $2`, lateOrder, late.ID)
	// A sale that ignored another buyer's live hold, as a broken fence would.
	if _, _, err := sale.store.PlaceHold(ctx, orderstore.HoldRequest{TicketID: 3, HoldID: uuid.New(), BuyerID: "buyer-3", TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	stolen := uuid.New()
	sale.plantSale(3, stolen, "mallory", nil)
	created = append(created, Order{ID: lateOrder, TicketID: 2}, Order{ID: stolen, TicketID: 3})

	r := auditor.Check(ctx, created, sale.availability, true)
	problems := strings.Join(r.Problems, " | ")
	for _, want := range []string{"1 orders from an expired hold (e.g. ticket 2)", "1 seats held by one buyer and sold to another", "(e.g. ticket 3)"} {
		if !strings.Contains(problems, want) {
			t.Fatalf("want a problem containing %q, got %q", want, problems)
		}
	}
}

// plantSale writes an order for ticket past every fence, keeping the
// counters consistent so that only the hold checks can see it.
func (s *auditedSale) plantSale(ticket int64, id uuid.UUID, buyer string, hold *uuid.UUID) {
	s.exec(`UPDATE tickets SET sold = true, held_until = NULL WHERE id = $1`, ticket)
	s.exec(`UPDATE sold_counter SET sold = sold + 1 WHERE shard = $1 % 64`, ticket)
	s.exec(`INSERT INTO orders (id, ticket_id, buyer_id, hold_id) VALUES ($1, $2, $3, $4)`, id, ticket, buyer, hold)
}
