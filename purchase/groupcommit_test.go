package purchase_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// The storms of issue 18 with the group commit forced small (one member per
// statement, four in flight) and large (one flusher, batches of up to 256
// that linger 5ms): the promise holds whatever the batch.
var batchings = []struct {
	name string
	b    orderstore.Batching
}{
	{"small", orderstore.Batching{Max: 1, Flushers: 4}},
	{"large", orderstore.Batching{Max: orderstore.MaxBatchMax, Window: orderstore.MaxBatchWindow, Flushers: 1}},
}

func withBatching(b orderstore.Batching) func(*purchase.Config) {
	return func(c *purchase.Config) { c.Batching = b }
}

func TestGroupCommit_TwoThousandBuyersOnOneSeat_OneOrder(t *testing.T) {
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			s := newTestSale(t, 10, withBatching(bc.b))
			s.AddPod()
			got := newTally()
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 2000 {
				wg.Go(func() {
					<-start
					got.add(s.BuyOn(i%2, 7, fmt.Sprintf("buyer-%d", i), ""))
				})
			}
			close(start)
			wg.Wait()
			if got.count("201") != 1 || got.count("409 ticket_locked")+got.count("409 ticket_sold") != 1999 {
				t.Fatalf("want one 201 and 1999 409s, got %v", got.byCode)
			}
			a := s.Audit()
			a.CheckAgainst(t, got.created, true)
			if a.Orders != 1 {
				t.Fatalf("want one order, got %d", a.Orders)
			}
		})
	}
}

func TestGroupCommit_SellOutOfTenThousandSeatsFromThreePods_Exact(t *testing.T) {
	const seats = 10_000
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			s := newTestSale(t, seats, withBatching(bc.b))
			s.AddPod()
			s.AddPod()
			got := newTally()
			// Every seat twice, in random order, from three pods.
			order := rand.Perm(2 * seats)
			storm(2*seats, 192, func(i int) {
				got.add(s.BuyOn(i%3, int64(order[i]%seats)+1, fmt.Sprintf("buyer-%d", i%5000), ""))
			})
			if got.count("201") != seats || got.count("201")+got.count("409 ticket_locked")+got.count("409 ticket_sold") != 2*seats {
				t.Fatalf("want %d 201s and only 409s besides, got %v", seats, got.byCode)
			}
			a := s.Audit()
			a.CheckAgainst(t, got.created, true)
			if a.Orders != seats || a.DistinctTickets != seats {
				t.Fatalf("want %d orders on distinct seats, got %d on %d", seats, a.Orders, a.DistinctTickets)
			}
		})
	}
}

// A batch is slowed in PostgreSQL (another transaction holds the seat's
// row) past the seat lock's TTL: a second buyer takes the expired lock and
// reaches PostgreSQL too. The fence sells the seat once.
func TestGroupCommit_LockExpiresWhileItsBatchIsSlow_OneOrder(t *testing.T) {
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			s := newTestSale(t, 5, withBatching(bc.b), func(c *purchase.Config) { c.LockTTL = 100 * time.Millisecond })
			ctx := context.Background()
			tx, err := s.DB.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `SELECT 1 FROM tickets WHERE id = 3 FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			first := make(chan purchasetest.Answer)
			go func() { first <- s.Buy(3, "first") }()
			time.Sleep(250 * time.Millisecond) // its batch waits on the row; its lock has expired
			second := make(chan purchasetest.Answer)
			go func() { second <- s.Buy(3, "second") }()
			time.Sleep(150 * time.Millisecond)
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			a, b := <-first, <-second
			got := newTally()
			got.add(a)
			got.add(b)
			if got.count("201") != 1 || got.count("409 ticket_sold")+got.count("409 ticket_locked") != 1 {
				t.Fatalf("want one order and one 409, got %v (first %d %s, second %d %s)", got.byCode, a.Status, a.Code, b.Status, b.Code)
			}
			audit := s.Audit()
			audit.CheckAgainst(t, got.created, true)
			if audit.Orders != 1 {
				t.Fatalf("want one order, got %d", audit.Orders)
			}
		})
	}
}

func TestGroupCommit_FLUSHALLMidSellOut_Exact(t *testing.T) {
	const seats, attempts = 3000, 9000
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			s := newTestSale(t, seats, withBatching(bc.b))
			s.AddPod()
			got := newTally()
			var done atomic.Int64
			flushed := make(chan struct{})
			go func() {
				defer close(flushed)
				reach(&done, attempts/3)
				if err := purchasetest.AdminRedis().FlushAll(context.Background()).Err(); err != nil {
					t.Errorf("FLUSHALL: %v", err)
				}
			}()
			order := rand.Perm(attempts)
			storm(attempts, 128, func(i int) {
				got.add(s.BuyOn(i%2, int64(order[i]%seats)+1, fmt.Sprintf("buyer-%d", i), ""))
				done.Add(1)
			})
			<-flushed
			for k := range got.byCode {
				if k != "201" && k != "409 ticket_sold" && k != "409 ticket_locked" {
					t.Fatalf("unexpected answer %q: %v", k, got.byCode)
				}
			}
			a := s.Audit()
			a.CheckAgainst(t, got.created, true) // exact: every order was answered 201
			if a.Orders != seats {
				t.Fatalf("want every seat sold once (%d), got %d orders; answers %v", seats, a.Orders, got.byCode)
			}
		})
	}
}

// PostgreSQL (durable, fsync on) is stopped and started mid-storm: every
// buyer told 201 has the order, and every 503 that names an order id
// resolves, once settled, to the truth in the database.
func TestGroupCommit_PostgresRestartMidBatch_Every201KeptEvery503Resolves(t *testing.T) {
	const seats, attempts = 1500, 4500
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			pg := purchasetest.Durable(t)
			s := purchasetest.NewSaleOn(t, pg, seats, withBatching(bc.b), func(c *purchase.Config) { c.LockTTL = 300 * time.Millisecond })
			got := newTally()
			var mu sync.Mutex
			var pending []string
			var done atomic.Int64
			outage := make(chan struct{})
			go func() {
				defer close(outage)
				reach(&done, attempts/4)
				if err := pg.Stop(); err != nil {
					t.Errorf("stop postgres: %v", err)
				}
				reach(&done, attempts/2)
				if err := pg.Start(); err != nil {
					t.Errorf("start postgres: %v", err)
				}
			}()
			storm(attempts, 64, func(i int) {
				a := s.Buy(int64(i%seats)+1, fmt.Sprintf("buyer-%d", i))
				got.add(a)
				if a.Status == http.StatusServiceUnavailable && a.OrderID != "" {
					mu.Lock()
					pending = append(pending, a.OrderID)
					mu.Unlock()
				}
				done.Add(1)
			})
			<-outage
			t.Logf("answers %v, %d 503s naming an order", got.byCode, len(pending))
			if got.count("503 unavailable") == 0 {
				t.Fatalf("want 503s while PostgreSQL was down, got %v", got.byCode)
			}
			// The pool reconnects: wait until the database answers again.
			testservers.Eventually(t, 30*time.Second, 50*time.Millisecond, "the sale's database to answer", func() error {
				return s.DB.Ping(context.Background())
			})
			audit := s.Audit()
			audit.CheckAgainst(t, got.created, false)
			for _, id := range pending {
				var o checkout.Order
				var status int
				testservers.Eventually(t, s.Cfg.LockTTL+checkout.Timeout+10*time.Second, 50*time.Millisecond, "GET /v1/orders/"+id+" to settle",
					testservers.Holds(func() bool {
						status = s.GetJSON("/v1/orders/"+id, &o)
						return status == http.StatusOK || status == http.StatusNotFound
					}))
				_, committed := audit.ByOrderID[id]
				if committed != (status == http.StatusOK) {
					t.Fatalf("order %s: GET answered %d, but the database has it: %v", id, status, committed)
				}
			}
		})
	}
}

func TestGroupCommit_BuyerLimitUnderTwoHundredConcurrentRequests_Exact(t *testing.T) {
	for _, bc := range batchings {
		t.Run(bc.name, func(t *testing.T) {
			s := newTestSale(t, 400, withBatching(bc.b), func(c *purchase.Config) { c.MaxPerBuyer = 5 })
			s.AddPod()
			got := newTally()
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 200 {
				wg.Go(func() {
					<-start
					got.add(s.BuyOn(i%2, int64(i)+1, "greedy", ""))
				})
			}
			close(start)
			wg.Wait()
			if got.count("201") != 5 || got.count("403 buyer_limit_reached") != 195 {
				t.Fatalf("want 5 orders and 195 buyer_limit_reached, got %v", got.byCode)
			}
			a := s.Audit()
			a.CheckAgainst(t, got.created, true)
			if a.Orders != 5 {
				t.Fatalf("want 5 orders, got %d", a.Orders)
			}
		})
	}
}
