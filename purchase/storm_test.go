package purchase_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// tally counts answers by status/code and keeps every created order.
type tally struct {
	mu      sync.Mutex
	byCode  map[string]int
	created []checkout.Order
	maxLat  time.Duration
}

func newTally() *tally { return &tally{byCode: map[string]int{}} }

func (t *tally) add(a purchasetest.Answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := fmt.Sprintf("%d %s", a.Status, a.Code)
	if a.Status == http.StatusCreated {
		key = "201"
		t.created = append(t.created, a.Order)
	}
	t.byCode[key]++
	t.maxLat = max(t.maxLat, a.Latency)
}

func (t *tally) count(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byCode[key]
}

// reach waits until a storm's done counter reaches n: where its chaos
// (FLUSHALL, a restart) strikes.
func reach(done *atomic.Int64, n int64) {
	for done.Load() < n {
		time.Sleep(2 * time.Millisecond)
	}
}

// storm runs fn for i in [0, n) on workers goroutines.
func storm(n, workers int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				fn(i)
			}
		})
	}
	wg.Wait()
}

func TestPurchase_ThousandBuyersOnOneSeat_ExactlyOneWins(t *testing.T) {
	s := newTestSale(t, 10)
	got := newTally()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Go(func() {
			<-start
			got.add(s.Buy(7, fmt.Sprintf("buyer-%d", i)))
		})
	}
	close(start)
	wg.Wait()

	if got.count("201") != 1 {
		t.Fatalf("want exactly one 201, got %v", got.byCode)
	}
	if losers := got.count("409 ticket_locked") + got.count("409 ticket_sold"); losers != 999 {
		t.Fatalf("want 999 answers 409 ticket_locked/ticket_sold, got %v", got.byCode)
	}
	a := s.Audit()
	if a.Orders != 1 {
		t.Fatalf("want one order row, got %d", a.Orders)
	}
	a.CheckAgainst(t, got.created, true)
}

func TestPurchase_SellOutStorm_EverySeatSoldOnce(t *testing.T) {
	const seats, buyers, attempts = 1000, 5000, 20000
	s := newTestSale(t, seats)
	got := newTally()
	// Every seat gets attempts/seats tries, in random order.
	order := rand.Perm(attempts)
	storm(attempts, 200, func(i int) {
		ticket := int64(order[i]%seats) + 1
		got.add(s.Buy(ticket, fmt.Sprintf("buyer-%d", rand.IntN(buyers))))
	})

	if got.count("201") != seats {
		t.Fatalf("want %d 201s, got %v", seats, got.byCode)
	}
	if n := got.count("201") + got.count("409 ticket_locked") + got.count("409 ticket_sold"); n != attempts {
		t.Fatalf("unexpected answers: %v", got.byCode)
	}
	a := s.Audit()
	if a.Orders != seats {
		t.Fatalf("want %d orders, got %d", seats, a.Orders)
	}
	a.CheckAgainst(t, got.created, true)
	var av checkout.Availability
	s.GetJSON("/v1/availability", &av)
	if av != (checkout.Availability{Tickets: seats, Sold: seats, Available: 0}) {
		t.Fatalf("availability %+v, want all %d sold", av, seats)
	}
}

func TestPurchase_LockExpiresDuringSlowTransaction_StillOneOrder(t *testing.T) {
	s := newTestSale(t, 5, func(c *purchase.Config) { c.LockTTL = 100 * time.Millisecond })
	var calls atomic.Int32
	slowHolderInTx := make(chan struct{})
	s.Pods[0].Svc.Checkout.SetBeforeConfirm(func(int64) {
		if calls.Add(1) == 1 { // the first holder stalls past its lock's TTL
			close(slowHolderInTx)
			time.Sleep(400 * time.Millisecond)
		}
	})
	slow := make(chan purchasetest.Answer)
	go func() { slow <- s.Buy(3, "slow-buyer") }()
	<-slowHolderInTx
	time.Sleep(150 * time.Millisecond) // the slow buyer's lock has expired

	fast := s.Buy(3, "fast-buyer")
	if fast.Status != http.StatusCreated {
		t.Fatalf("the second buyer should take the expired lock and win: got %d %s", fast.Status, fast.Code)
	}
	late := <-slow
	if late.Status != http.StatusConflict || late.Code != "ticket_sold" {
		t.Fatalf("the stalled buyer must be fenced off by Postgres with 409 ticket_sold, got %d %s", late.Status, late.Code)
	}
	a := s.Audit()
	if a.Orders != 1 || a.ByOrderID[fast.Order.ID.String()] != 3 {
		t.Fatalf("want exactly the fast buyer's order, got %+v", a)
	}
	var st httpapi.TicketBody
	s.GetJSON("/v1/tickets/3", &st)
	if st.Status != checkout.TicketSold {
		t.Fatalf("ticket 3 status %q, want sold", st.Status)
	}
}

func TestPurchase_RedisFlushedAndRestartedMidStorm_NoDoubleSale(t *testing.T) {
	const seats, attempts = 4000, 12000
	s := newTestSale(t, seats)
	s.AddPod() // two pods: neither can rely on its own memory of sold seats
	for _, p := range s.Pods {
		// Widen the window between lock and commit so lost locks matter.
		p.Svc.Checkout.SetBeforeConfirm(func(int64) { time.Sleep(time.Millisecond) })
	}
	got := newTally()
	var done atomic.Int64
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		reach(&done, attempts/4)
		if err := purchasetest.AdminRedis().FlushAll(context.Background()).Err(); err != nil {
			t.Errorf("FLUSHALL: %v", err)
		}
		reach(&done, attempts/2)
		_ = purchasetest.Redis().Kill()
		t.Logf("redis killed after %d attempts", done.Load())
		// Pods stay ready: buyers get 503 + Retry-After, not an Ingress 404.
		if st := s.GetJSON("/readyz", nil); st != http.StatusOK {
			t.Errorf("/readyz answered %d while Redis was down, want 200", st)
		}
		time.Sleep(500 * time.Millisecond)
		t.Logf("redis restarting after %d attempts", done.Load())
		if err := purchasetest.Redis().Start(); err != nil {
			t.Errorf("restart redis: %v", err)
		}
	}()
	storm(attempts, 100, func(i int) {
		got.add(s.BuyOn(i%2, int64(rand.IntN(seats))+1, fmt.Sprintf("buyer-%d", i), ""))
		done.Add(1)
	})
	<-chaos

	t.Logf("answers: %v", got.byCode)
	a := s.Audit()
	a.CheckAgainst(t, got.created, true)
	if got.count("503 unavailable") == 0 {
		t.Errorf("expected some 503 unavailable while Redis was down, got %v", got.byCode)
	}
	// Sales continue after Redis is back: sell every seat left.
	after := newTally()
	for ticket := int64(1); ticket <= seats; ticket++ {
		// A 503 says: retry. Right after the restart a pod's Redis pool may
		// still answer its last dial error for up to a second (go-redis
		// re-dials in the background once every dial of a burst failed),
		// and the client retries nothing by itself: retry like a buyer.
		var a purchasetest.Answer
		testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, fmt.Sprintf("seat %d to answer other than 503", ticket), testservers.Holds(func() bool {
			a = s.BuyOn(int(ticket%2), ticket, "after-restart", "")
			return a.Status != http.StatusServiceUnavailable
		}))
		after.add(a)
	}
	if after.count("201")+after.count("409 ticket_sold") != seats {
		t.Fatalf("after the restart every seat must sell or be sold: %v", after.byCode)
	}
	final := s.Audit()
	final.CheckAgainst(t, append(got.created, after.created...), true)
	if final.Orders != seats {
		t.Fatalf("want all %d seats sold, got %d", seats, final.Orders)
	}
}

func TestPurchase_SameIdempotencyKeyConcurrently_OneOrder(t *testing.T) {
	s := newTestSale(t, 20)
	s.AddPod()
	got := newTally()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { got.add(s.BuyOn(i%2, 9, "buyer-k", "key-123")) })
	}
	wg.Wait()
	if got.count("201") != 50 {
		t.Fatalf("every retry with the key must answer the order: %v", got.byCode)
	}
	for _, o := range got.created {
		if o.ID != got.created[0].ID || o.TicketID != 9 || o.BuyerID != "buyer-k" {
			t.Fatalf("retries answered different orders: %+v vs %+v", o, got.created[0])
		}
	}
	if a := s.Audit(); a.Orders != 1 {
		t.Fatalf("want one order, got %d", a.Orders)
	}
	later := s.BuyOn(0, 9, "buyer-k", "key-123")
	if later.Status != http.StatusCreated || later.Order.ID != got.created[0].ID ||
		later.Header.Get("Idempotent-Replayed") != "true" || later.Header.Get("Idempotency-Key") != "key-123" {
		t.Fatalf("a later retry must replay the order: %+v", later)
	}
	other := s.BuyOn(0, 10, "buyer-k", "key-123")
	if other.Status != http.StatusBadRequest || other.Code != "invalid_request" {
		t.Fatalf("the key reused for another seat must be refused, got %d %s", other.Status, other.Code)
	}
	if st := s.Buy(10, "someone"); st.Status != http.StatusCreated {
		t.Fatalf("the refused key must release seat 10, got %d %s", st.Status, st.Code)
	}
}

func TestPurchase_BuyerLimitUnderConcurrency_ExactlyTheLimit(t *testing.T) {
	s := newTestSale(t, 100, func(c *purchase.Config) { c.MaxPerBuyer = 2 })
	got := newTally()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { got.add(s.Buy(int64(i)+1, "greedy")) })
	}
	wg.Wait()
	if got.count("201") != 2 || got.count("403 buyer_limit_reached") != 48 {
		t.Fatalf("want 2 orders and 48 buyer_limit_reached, got %v", got.byCode)
	}
	if a := s.Audit(); a.Orders != 2 {
		t.Fatalf("want 2 orders, got %d", a.Orders)
	}
	// The refused seats were released at once, not left locked until expiry.
	sold := map[int64]bool{got.created[0].TicketID: true, got.created[1].TicketID: true}
	for id := int64(1); id <= 50; id++ {
		var st httpapi.TicketBody
		s.GetJSON(fmt.Sprintf("/v1/tickets/%d", id), &st)
		if want := map[bool]checkout.TicketStatus{true: checkout.TicketSold, false: checkout.TicketAvailable}[sold[id]]; st.Status != want {
			t.Fatalf("ticket %d is %q, want %q", id, st.Status, want)
		}
	}
}

func TestPurchase_AnySeatStorm_EverySeatOnceThenSoldOut(t *testing.T) {
	const seats, buyers = 300, 1000
	s := newTestSale(t, seats)
	s.AddPod()
	got := newTally()
	storm(buyers, 100, func(i int) {
		// A buyer retries while every remaining seat is held by others
		// (bounded: a busy machine may keep seats held for a while).
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			a := s.Post(i%2, "/v1/purchase", fmt.Sprintf(`{"buyerId":"ga-%d"}`, i), nil)
			if a.Code != "ticket_locked" || time.Now().After(deadline) {
				got.add(a)
				return
			}
		}
	})
	if got.count("201") != seats || got.count("409 sold_out") != buyers-seats {
		t.Fatalf("want %d orders and %d sold_out, got %v", seats, buyers-seats, got.byCode)
	}
	a := s.Audit()
	a.CheckAgainst(t, got.created, true)
	if a.Orders != seats {
		t.Fatalf("want %d orders, got %d", seats, a.Orders)
	}
	if last := s.Post(0, "/v1/purchase", `{"buyerId":"late"}`, nil); last.Code != "sold_out" {
		t.Fatalf("after the sell-out want 409 sold_out, got %d %s", last.Status, last.Code)
	}
}

func TestPurchase_AnySeat_NeverSoldOutWhileASeatIsFree(t *testing.T) {
	s := newTestSale(t, 50)
	for id := int64(1); id <= 50; id++ {
		if id == 37 {
			continue
		}
		if a := s.Buy(id, "b"); a.Status != http.StatusCreated {
			t.Fatalf("buy %d: %d %s", id, a.Status, a.Code)
		}
	}
	// The pool may have been filled before these sales and lost seat 37
	// since (Redis data loss): Postgres still knows it is free.
	if err := purchasetest.AdminRedis().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	a := s.Post(0, "/v1/purchase", `{"buyerId":"ga"}`, nil)
	if a.Status != http.StatusCreated || a.Order.TicketID != 37 {
		t.Fatalf("the last free seat must be sold, got %d %s %+v", a.Status, a.Code, a.Order)
	}
	if a := s.Post(0, "/v1/purchase", `{"buyerId":"ga2"}`, nil); a.Code != "sold_out" {
		t.Fatalf("want sold_out, got %d %s", a.Status, a.Code)
	}
}

func TestPurchase_PostgresStoppedMidStorm_503sAndNoLostOrder(t *testing.T) {
	const seats, attempts = 2000, 6000
	s := newTestSale(t, seats, func(c *purchase.Config) { c.LockTTL = 300 * time.Millisecond })
	got := newTally()
	var done atomic.Int64
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		reach(&done, attempts/4)
		if err := purchasetest.Postgres().Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
		reach(&done, attempts/2)
		if err := purchasetest.Postgres().Start(); err != nil {
			t.Errorf("start postgres: %v", err)
		}
	}()
	storm(attempts, 50, func(i int) {
		got.add(s.Buy(int64(i%seats)+1, fmt.Sprintf("buyer-%d", i)))
		done.Add(1)
	})
	<-outage
	t.Logf("answers: %v, slowest %v", got.byCode, got.maxLat)

	if got.count("503 unavailable") == 0 {
		t.Fatalf("want 503 unavailable while Postgres was down, got %v", got.byCode)
	}
	if got.maxLat > checkout.Timeout+2*time.Second {
		t.Fatalf("an answer took %v: a dead database must not hang requests", got.maxLat)
	}
	for k := range got.byCode {
		if k != "201" && k != "503 unavailable" && k != "409 ticket_sold" && k != "409 ticket_locked" {
			t.Fatalf("unexpected answer %q: %v", k, got.byCode)
		}
	}
	s.Audit().CheckAgainst(t, got.created, false)

	// No lock outlives its TTL: after it, every seat key is a sold marker.
	time.Sleep(s.Cfg.LockTTL + 100*time.Millisecond)
	rdb := purchasetest.AdminRedis()
	keys, err := rdb.Keys(context.Background(), "fs:"+s.Cfg.Sale+":ticket:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v := rdb.Get(context.Background(), k).Val(); !strings.HasPrefix(v, "sold:") && v != "" {
			t.Fatalf("lock %s = %q still held after its TTL", k, v)
		}
	}
}
