package purchase

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
)

// tally counts answers by status/code and keeps every created order.
type tally struct {
	mu      sync.Mutex
	byCode  map[string]int
	created []Order
	maxLat  time.Duration
}

func newTally() *tally { return &tally{byCode: map[string]int{}} }

func (t *tally) add(a answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := fmt.Sprintf("%d %s", a.status, a.code)
	if a.status == http.StatusCreated {
		key = "201"
		t.created = append(t.created, a.order)
	}
	t.byCode[key]++
	t.maxLat = max(t.maxLat, a.latency)
}

func (t *tally) count(key string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byCode[key]
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
			got.add(s.buy(7, fmt.Sprintf("buyer-%d", i)))
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
	a := s.audit()
	if a.orders != 1 {
		t.Fatalf("want one order row, got %d", a.orders)
	}
	a.checkAgainst(t, got.created, true)
}

func TestPurchase_SellOutStorm_EverySeatSoldOnce(t *testing.T) {
	const seats, buyers, attempts = 1000, 5000, 20000
	s := newTestSale(t, seats)
	got := newTally()
	// Every seat gets attempts/seats tries, in random order.
	order := rand.Perm(attempts)
	storm(attempts, 200, func(i int) {
		ticket := int64(order[i]%seats) + 1
		got.add(s.buy(ticket, fmt.Sprintf("buyer-%d", rand.IntN(buyers))))
	})

	if got.count("201") != seats {
		t.Fatalf("want %d 201s, got %v", seats, got.byCode)
	}
	if n := got.count("201") + got.count("409 ticket_locked") + got.count("409 ticket_sold"); n != attempts {
		t.Fatalf("unexpected answers: %v", got.byCode)
	}
	a := s.audit()
	if a.orders != seats {
		t.Fatalf("want %d orders, got %d", seats, a.orders)
	}
	a.checkAgainst(t, got.created, true)
	var av Availability
	s.getJSON("/v1/availability", &av)
	if av != (Availability{Tickets: seats, Sold: seats, Available: 0}) {
		t.Fatalf("availability %+v, want all %d sold", av, seats)
	}
}

func TestPurchase_LockExpiresDuringSlowTransaction_StillOneOrder(t *testing.T) {
	s := newTestSale(t, 5, func(c *Config) { c.LockTTL = 100 * time.Millisecond })
	var calls atomic.Int32
	slowHolderInTx := make(chan struct{})
	s.pods[0].svc.beforeConfirm = func(int64) {
		if calls.Add(1) == 1 { // the first holder stalls past its lock's TTL
			close(slowHolderInTx)
			time.Sleep(400 * time.Millisecond)
		}
	}
	slow := make(chan answer)
	go func() { slow <- s.buy(3, "slow-buyer") }()
	<-slowHolderInTx
	time.Sleep(150 * time.Millisecond) // the slow buyer's lock has expired

	fast := s.buy(3, "fast-buyer")
	if fast.status != http.StatusCreated {
		t.Fatalf("the second buyer should take the expired lock and win: got %d %s", fast.status, fast.code)
	}
	late := <-slow
	if late.status != http.StatusConflict || late.code != "ticket_sold" {
		t.Fatalf("the stalled buyer must be fenced off by Postgres with 409 ticket_sold, got %d %s", late.status, late.code)
	}
	a := s.audit()
	if a.orders != 1 || a.byOrderID[fast.order.ID.String()] != 3 {
		t.Fatalf("want exactly the fast buyer's order, got %+v", a)
	}
	var st ticketBody
	s.getJSON("/v1/tickets/3", &st)
	if st.Status != TicketSold {
		t.Fatalf("ticket 3 status %q, want sold", st.Status)
	}
}

func TestPurchase_RedisFlushedAndRestartedMidStorm_NoDoubleSale(t *testing.T) {
	const seats, attempts = 4000, 12000
	s := newTestSale(t, seats)
	s.addPod() // two pods: neither can rely on its own memory of sold seats
	for _, p := range s.pods {
		// Widen the window between lock and commit so lost locks matter.
		p.svc.beforeConfirm = func(int64) { time.Sleep(time.Millisecond) }
	}
	got := newTally()
	var done atomic.Int64
	chaos := make(chan struct{})
	go func() {
		defer close(chaos)
		for done.Load() < attempts/4 {
			time.Sleep(5 * time.Millisecond)
		}
		if err := newRedisClient().FlushAll(context.Background()).Err(); err != nil {
			t.Errorf("FLUSHALL: %v", err)
		}
		for done.Load() < attempts/2 {
			time.Sleep(5 * time.Millisecond)
		}
		_ = redisSrv.Kill()
		t.Logf("redis killed after %d attempts", done.Load())
		// Pods stay ready: buyers get 503 + Retry-After, not an Ingress 404.
		if st := s.getJSON("/readyz", nil); st != http.StatusOK {
			t.Errorf("/readyz answered %d while Redis was down, want 200", st)
		}
		time.Sleep(500 * time.Millisecond)
		t.Logf("redis restarting after %d attempts", done.Load())
		if err := redisSrv.Start(); err != nil {
			t.Errorf("restart redis: %v", err)
		}
	}()
	storm(attempts, 100, func(i int) {
		got.add(s.buyOn(i%2, int64(rand.IntN(seats))+1, fmt.Sprintf("buyer-%d", i), ""))
		done.Add(1)
	})
	<-chaos

	t.Logf("answers: %v", got.byCode)
	a := s.audit()
	a.checkAgainst(t, got.created, true)
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
		var a answer
		waitFor(t, 5*time.Second, fmt.Sprintf("seat %d to answer other than 503", ticket), func() bool {
			a = s.buyOn(int(ticket%2), ticket, "after-restart", "")
			return a.status != http.StatusServiceUnavailable
		})
		after.add(a)
	}
	if after.count("201")+after.count("409 ticket_sold") != seats {
		t.Fatalf("after the restart every seat must sell or be sold: %v", after.byCode)
	}
	final := s.audit()
	final.checkAgainst(t, append(got.created, after.created...), true)
	if final.orders != seats {
		t.Fatalf("want all %d seats sold, got %d", seats, final.orders)
	}
}

func TestPurchase_SameIdempotencyKeyConcurrently_OneOrder(t *testing.T) {
	s := newTestSale(t, 20)
	s.addPod()
	got := newTally()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { got.add(s.buyOn(i%2, 9, "buyer-k", "key-123")) })
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
	if a := s.audit(); a.orders != 1 {
		t.Fatalf("want one order, got %d", a.orders)
	}
	later := s.buyOn(0, 9, "buyer-k", "key-123")
	if later.status != http.StatusCreated || later.order.ID != got.created[0].ID ||
		later.header.Get(replayedHeader) != "true" || later.header.Get(idemKeyHeader) != "key-123" {
		t.Fatalf("a later retry must replay the order: %+v", later)
	}
	other := s.buyOn(0, 10, "buyer-k", "key-123")
	if other.status != http.StatusBadRequest || other.code != "invalid_request" {
		t.Fatalf("the key reused for another seat must be refused, got %d %s", other.status, other.code)
	}
	if st := s.buy(10, "someone"); st.status != http.StatusCreated {
		t.Fatalf("the refused key must release seat 10, got %d %s", st.status, st.code)
	}
}

func TestPurchase_BuyerLimitUnderConcurrency_ExactlyTheLimit(t *testing.T) {
	s := newTestSale(t, 100, func(c *Config) { c.MaxPerBuyer = 2 })
	got := newTally()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() { got.add(s.buy(int64(i)+1, "greedy")) })
	}
	wg.Wait()
	if got.count("201") != 2 || got.count("403 buyer_limit_reached") != 48 {
		t.Fatalf("want 2 orders and 48 buyer_limit_reached, got %v", got.byCode)
	}
	if a := s.audit(); a.orders != 2 {
		t.Fatalf("want 2 orders, got %d", a.orders)
	}
	// The refused seats were released at once, not left locked until expiry.
	sold := map[int64]bool{got.created[0].TicketID: true, got.created[1].TicketID: true}
	for id := int64(1); id <= 50; id++ {
		var st ticketBody
		s.getJSON(fmt.Sprintf("/v1/tickets/%d", id), &st)
		if want := map[bool]TicketStatus{true: TicketSold, false: TicketAvailable}[sold[id]]; st.Status != want {
			t.Fatalf("ticket %d is %q, want %q", id, st.Status, want)
		}
	}
}

func TestPurchase_AnySeatStorm_EverySeatOnceThenSoldOut(t *testing.T) {
	const seats, buyers = 300, 1000
	s := newTestSale(t, seats)
	s.addPod()
	got := newTally()
	storm(buyers, 100, func(i int) {
		// A buyer retries while every remaining seat is held by others
		// (bounded: a busy machine may keep seats held for a while).
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			a := s.post(i%2, "/v1/purchase", fmt.Sprintf(`{"buyerId":"ga-%d"}`, i), nil)
			if a.code != "ticket_locked" || time.Now().After(deadline) {
				got.add(a)
				return
			}
		}
	})
	if got.count("201") != seats || got.count("409 sold_out") != buyers-seats {
		t.Fatalf("want %d orders and %d sold_out, got %v", seats, buyers-seats, got.byCode)
	}
	a := s.audit()
	a.checkAgainst(t, got.created, true)
	if a.orders != seats {
		t.Fatalf("want %d orders, got %d", seats, a.orders)
	}
	if last := s.post(0, "/v1/purchase", `{"buyerId":"late"}`, nil); last.code != "sold_out" {
		t.Fatalf("after the sell-out want 409 sold_out, got %d %s", last.status, last.code)
	}
}

func TestPurchase_AnySeat_NeverSoldOutWhileASeatIsFree(t *testing.T) {
	s := newTestSale(t, 50)
	for id := int64(1); id <= 50; id++ {
		if id == 37 {
			continue
		}
		if a := s.buy(id, "b"); a.status != http.StatusCreated {
			t.Fatalf("buy %d: %d %s", id, a.status, a.code)
		}
	}
	// The pool may have been filled before these sales and lost seat 37
	// since (Redis data loss): Postgres still knows it is free.
	if err := newRedisClient().FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	a := s.post(0, "/v1/purchase", `{"buyerId":"ga"}`, nil)
	if a.status != http.StatusCreated || a.order.TicketID != 37 {
		t.Fatalf("the last free seat must be sold, got %d %s %+v", a.status, a.code, a.order)
	}
	if a := s.post(0, "/v1/purchase", `{"buyerId":"ga2"}`, nil); a.code != "sold_out" {
		t.Fatalf("want sold_out, got %d %s", a.status, a.code)
	}
}

func TestPurchase_PostgresStoppedMidStorm_503sAndNoLostOrder(t *testing.T) {
	const seats, attempts = 2000, 6000
	s := newTestSale(t, seats, func(c *Config) { c.LockTTL = 300 * time.Millisecond })
	got := newTally()
	var done atomic.Int64
	outage := make(chan struct{})
	go func() {
		defer close(outage)
		for done.Load() < attempts/4 {
			time.Sleep(5 * time.Millisecond)
		}
		if err := pgSrv.Stop(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
		for done.Load() < attempts/2 {
			time.Sleep(5 * time.Millisecond)
		}
		if err := pgSrv.Start(); err != nil {
			t.Errorf("start postgres: %v", err)
		}
	}()
	storm(attempts, 50, func(i int) {
		got.add(s.buy(int64(i%seats)+1, fmt.Sprintf("buyer-%d", i)))
		done.Add(1)
	})
	<-outage
	t.Logf("answers: %v, slowest %v", got.byCode, got.maxLat)

	if got.count("503 unavailable") == 0 {
		t.Fatalf("want 503 unavailable while Postgres was down, got %v", got.byCode)
	}
	if got.maxLat > purchaseTimeout+2*time.Second {
		t.Fatalf("an answer took %v: a dead database must not hang requests", got.maxLat)
	}
	for k := range got.byCode {
		if k != "201" && k != "503 unavailable" && k != "409 ticket_sold" && k != "409 ticket_locked" {
			t.Fatalf("unexpected answer %q: %v", k, got.byCode)
		}
	}
	s.audit().checkAgainst(t, got.created, false)

	// No lock outlives its TTL: after it, every seat key is a sold marker.
	time.Sleep(s.cfg.LockTTL + 100*time.Millisecond)
	rdb := newRedisClient()
	keys, err := rdb.Keys(context.Background(), "fs:"+s.cfg.Sale+":ticket:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if v := rdb.Get(context.Background(), k).Val(); !strings.HasPrefix(v, "sold:") && v != "" {
			t.Fatalf("lock %s = %q still held after its TTL", k, v)
		}
	}
}
