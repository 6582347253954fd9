package loadtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

func TestQueueScenario_BuyersQueueBuyWithPassesAndSellOut_Audited(t *testing.T) {
	const seats, buyers = 100, 300
	ctx := t.Context()
	url, dbURL := startSale(t, seats, func(c *purchase.Config) {
		c.SaleSecret, c.WaitingRoom = "loadtest-queue-secret-0123456789abcdef", waitingroom.Settings{AdmitPerSecond: 150}
	})
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}

	lc := Config{URL: url, Scenario: Queue, Seat: 1, Buyers: buyers, Concurrency: 32, Duration: time.Minute, Timeout: 10 * time.Second}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	q := s.Queue
	if q == nil || s.StoppedBy != stopBuyersDone {
		t.Fatalf("want a queue summary, every buyer finished; got stopped by %s, %+v", s.StoppedBy, q)
	}
	if q.Joined != buyers || q.Bought != seats || s.Count(Created) != seats || q.Bought+q.SoldOut != buyers || q.Errors != 0 {
		t.Fatalf("want %d joined, %d bought and the rest told sold out, no errors; got %+v", buyers, seats, q)
	}
	if q.FIFOInversions != 0 || q.Admitted < seats || q.TimeInQueue.P99Ms <= 0 {
		t.Fatalf("want no FIFO inversion, at least %d admitted with a time in queue; got %+v", seats, q)
	}
	r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true)
	if !r.OK || r.NewOrders != seats {
		t.Fatalf("want the audit to pass with %d new orders, got %+v", seats, r)
	}
	t.Logf("%s", q.text())
}

// The queue scenario checking out through holds: every admitted buyer
// holds any seat, thinks, and confirms; the audit (holds included) is
// exact.
func TestQueueScenario_CheckoutThroughHolds_SellsOutAudited(t *testing.T) {
	const seats, buyers = 60, 150
	ctx := t.Context()
	url, dbURL := startSale(t, seats, func(c *purchase.Config) {
		c.SaleSecret, c.WaitingRoom, c.HoldTTL = "loadtest-queue-secret-0123456789abcdef", waitingroom.Settings{AdmitPerSecond: 150}, time.Minute
	})
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: Queue, QueueHolds: true, ThinkTime: 20 * time.Millisecond, Seat: 1, Buyers: buyers,
		Concurrency: 32, Duration: time.Minute, Timeout: 10 * time.Second}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	q := res.Summary.Queue
	if q == nil || q.Bought != seats || q.Bought+q.SoldOut != buyers || q.Errors != 0 {
		var text strings.Builder
		_ = WriteText(&text, res.Summary)
		t.Fatalf("want %d bought through holds and the rest told sold out, no errors; got %+v\n%s", seats, q, text.String())
	}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var fromHolds int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE hold_id IS NOT NULL`).Scan(&fromHolds); err != nil {
		t.Fatal(err)
	}
	if fromHolds != seats {
		t.Errorf("want every order to come from a hold's confirmation, got %d of %d", fromHolds, len(res.Created))
	}
	r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true)
	if !r.OK || r.NewOrders != seats {
		t.Fatalf("want the audit to pass with %d new orders, got %+v", seats, r)
	}
}

func TestFIFOInversions_CountsOnlyCertainOnes(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(1000, 0).Add(time.Duration(ms) * time.Millisecond) }
	b := func(start, end, lastWaiting, admitted int) queueBuyer {
		q := queueBuyer{joinStart: at(start), joinEnd: at(end), admitted: at(admitted)}
		if lastWaiting >= 0 {
			q.lastWaiting = at(lastWaiting)
		}
		return q
	}
	cases := []struct {
		name   string
		buyers []queueBuyer
		want   int64
	}{
		{"in order", []queueBuyer{b(0, 10, 100, 1000), b(20, 30, 1000, 2000)}, 0},
		{"later joiner admitted while the first still waited", []queueBuyer{b(0, 10, 3000, 4000), b(20, 30, 100, 1000)}, 1},
		{"within the views' tolerance", []queueBuyer{b(0, 10, 1200, 2000), b(20, 30, 100, 1000)}, 0},
		{"overlapping joins are not ordered", []queueBuyer{b(0, 50, 3000, 4000), b(20, 30, 100, 1000)}, 0},
		{"admitted at join, never waiting", []queueBuyer{b(0, 10, -1, 10), b(20, 30, 25, 1000)}, 0},
		{"two late joiners pass one", []queueBuyer{b(0, 10, 5000, 6000), b(20, 30, 100, 1000), b(40, 50, 100, 1000)}, 2},
	}
	for _, c := range cases {
		if got := fifoInversions(c.buyers); got != c.want {
			t.Errorf("%s: want %d inversions, got %d", c.name, c.want, got)
		}
	}
}

// Issue 17: with proof of work on, the queue scenario's buyers solve the
// join challenges too (one each, as a page does), and the sale sells out
// as without it.
func TestQueueScenario_ProofOfWork_BuyersSolveTheChallenges(t *testing.T) {
	const seats, buyers = 20, 60
	ctx := t.Context()
	url, dbURL := startSale(t, seats, func(c *purchase.Config) {
		c.SaleSecret = "loadtest-queue-secret-0123456789abcdef"
		c.WaitingRoom = waitingroom.Settings{AdmitPerSecond: 100, ProofOfWork: 12}
	})
	auditor, err := NewAuditor(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	lc := Config{URL: url, Scenario: Queue, Seat: 1, Buyers: buyers, Concurrency: 16, Duration: time.Minute, Timeout: 10 * time.Second}
	res, err := Run(ctx, lc)
	if err != nil {
		t.Fatal(err)
	}
	q := res.Summary.Queue
	if q == nil || q.Joined != buyers || q.Bought != seats || q.Errors != 0 || q.Solves < buyers || q.SolveHashes < q.Solves {
		t.Fatalf("want %d joined, each after solving a challenge, %d bought, no errors; got %+v", buyers, seats, q)
	}
	r := auditor.Check(ctx, res.Created, func(ctx context.Context) (Availability, error) { return FetchAvailability(ctx, lc) }, true)
	if !r.OK || r.NewOrders != seats {
		t.Fatalf("want the audit to pass with %d new orders, got %+v", seats, r)
	}
	t.Logf("%s", q.text())
}
