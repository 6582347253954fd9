package purchase_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/sale"
)

// Item 1: a keyless buyer whose order committed while the answer was lost
// (the commit waited on a synchronous standby that is down) is told the
// order id in the 503, and GET /v1/orders/{id} tells the outcome.
func TestPurchase_CommitOutlivesItsAnswer_The503NamesTheOrderAndGETFindsIt(t *testing.T) {
	s := newTestSale(t, 10)
	ctx := context.Background()
	// This sale's sessions wait for a synchronous standby that never comes.
	if _, err := s.DB.Exec(ctx, fmt.Sprintf("ALTER DATABASE %q SET synchronous_commit = on", s.Cfg.Sale)); err != nil {
		t.Fatal(err)
	}
	setStandby := func(v string) {
		if _, err := s.DB.Exec(ctx, fmt.Sprintf("ALTER SYSTEM SET synchronous_standby_names = '%s'", v)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.DB.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
			t.Fatal(err)
		}
	}
	setStandby("ghost")
	t.Cleanup(func() { setStandby("") })
	s.AddPod() // its connections start with synchronous_commit = on

	req, _ := http.NewRequest(http.MethodPost, s.Pods[1].URL+"/v1/tickets/3/purchase", strings.NewReader(`{"buyerId":"lost-answer"}`))
	p, resp, raw := s.problemOf(req)
	if resp.StatusCode != http.StatusServiceUnavailable || p.Code != "unavailable" || p.OrderID == "" {
		t.Fatalf("want 503 unavailable naming the order, got %d %s", resp.StatusCode, raw)
	}
	id := p.OrderID
	// The outcome settles once the server drops the purchase's session.
	var final int
	var o checkout.Order
	testservers.Eventually(t, s.Cfg.LockTTL+checkout.Timeout+5*time.Second, 20*time.Millisecond, "GET /v1/orders/"+id+" to settle", testservers.Holds(func() bool {
		final = s.GetJSON("/v1/orders/"+id, &o)
		return final != http.StatusServiceUnavailable
	}))
	if final != http.StatusOK || o.TicketID != 3 || o.BuyerID != "lost-answer" {
		t.Fatalf("the committed order must be found: got %d %+v", final, o)
	}
}

// A keyed purchase's order id is derived: it carries no time to settle by.
// While the purchase's statement may still commit (here it waits on the
// seat's row, which the test holds), GET /v1/orders/{id} of that id, on a
// pod that knows nothing of the purchase, answers 503 order_pending, not a
// final 404; once it committed, the order. The admin cancel follows the
// same rule. (A 503 naming the id comes at the purchase's bound, 5 s, and
// the commit may land after it: the same state, seen later.)
func TestOrder_KeyedPurchaseInFlight_PendingNot404ThenTheOrder(t *testing.T) {
	s := newTestSale(t, 10)
	s.AddPod()
	ctx := context.Background()
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a second rollback is a no-op
	if _, err := tx.Exec(ctx, `SELECT 1 FROM tickets WHERE id = 3 FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	bought := make(chan purchasetest.Answer, 1)
	go func() { bought <- s.BuyOn(1, 3, "keyed", "k-inflight") }()

	// The order id is the seat's lock token in Redis while it is bought.
	var id string
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the keyed purchase's statement to wait on the seat's row", func() error {
		tok, err := purchasetest.AdminRedis().Get(ctx, fmt.Sprintf("fs:%s:ticket:3", s.Cfg.Sale)).Result()
		if err != nil {
			return err
		}
		id = tok
		var waiting bool
		if err := s.DB.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%confirm_purchase%'`).Scan(&waiting); err != nil || !waiting {
			return fmt.Errorf("not waiting yet (%v)", err)
		}
		return nil
	})
	if v := uuid.MustParse(id).Version(); v != 8 {
		t.Fatalf("a keyed purchase's order id is derived (v8), got %s", id)
	}
	resp, err := s.Client.Get(s.Pods[0].URL + "/v1/orders/" + id)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("GET of a keyed order still committing: want 503 order_pending with Retry-After, got %d", resp.StatusCode)
	}
	if a := cancelOn(t, s.Sale, 0, id, s.Cfg.AdminToken, "ops", "refund"); a.status != http.StatusServiceUnavailable || a.code != "order_pending" {
		t.Fatalf("cancel of a keyed order still committing: want 503 order_pending, got %d %s", a.status, a.code)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	a := <-bought
	if a.Status != http.StatusCreated || a.Order.ID.String() != id {
		t.Fatalf("the keyed purchase: %d %s %+v", a.Status, a.Code, a.Order)
	}
	var o checkout.Order
	if st := s.GetJSON("/v1/orders/"+id, &o); st != http.StatusOK || o.ID.String() != id {
		t.Fatalf("GET once committed: %d %+v", st, o)
	}
	// A derived id nobody is buying under is settled: 404 at once.
	unknown := uuid.New()
	unknown[6] = unknown[6]&0x0f | 0x80 // version 8
	if st := s.GetJSON("/v1/orders/"+unknown.String(), nil); st != http.StatusNotFound {
		t.Fatalf("a derived id nobody bought under: want 404, got %d", st)
	}
}

// Item 1, the other outcome: an order id that never committed is pending
// until its purchase is settled, then 404.
func TestOrder_UnknownOrderID_PendingUntilSettledThen404(t *testing.T) {
	s := newTestSale(t, 10)
	v7At := func(t0 time.Time) string {
		id := uuid.Must(uuid.NewV7())
		var ms [8]byte
		binary.BigEndian.PutUint64(ms[:], uint64(t0.UnixMilli())<<16)
		copy(id[:6], ms[:6])
		return id.String()
	}
	resp, err := s.Client.Get(s.Pods[0].URL + "/v1/orders/" + v7At(time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Retry-After") == "1" {
		t.Fatalf("an order of a purchase still running: want 503 order_pending with Retry-After until settled, got %d %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	old := v7At(time.Now().Add(-s.Pods[0].Svc.Checkout.SettleAfter() - time.Second))
	if st := s.GetJSON("/v1/orders/"+old, nil); st != http.StatusNotFound {
		t.Fatalf("a settled purchase without an order: want 404, got %d", st)
	}
}

// Item 2: a committed key replays whatever the window or the pause say.
func TestPurchase_CommittedKeyReplays_AfterTheSaleEndedAndWhilePaused(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) { c.MaxPerBuyer = 1 })
	first := s.BuyOn(0, 4, "late", "k-late")
	if first.Status != http.StatusCreated {
		t.Fatalf("first purchase: %d %s", first.Status, first.Code)
	}
	anyFirst := s.Post(0, "/v1/purchase", `{"buyerId":"late-any"}`, map[string]string{"Idempotency-Key": "k-any"})
	if anyFirst.Status != http.StatusCreated {
		t.Fatalf("first any-seat purchase: %d %s", anyFirst.Status, anyFirst.Code)
	}
	now := time.Now()
	for _, c := range []struct {
		name      string
		sch       sale.Schedule
		newStatus int
		newCode   string
	}{
		{"ended", sale.Schedule{EndsAt: now.Add(-time.Minute)}, 403, "sale_ended"},
		{"paused", sale.Schedule{Paused: true}, 503, "sale_paused"},
		{"not started", sale.Schedule{StartsAt: now.Add(time.Hour)}, 403, "sale_not_started"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.Pods[0].Svc.Checkout.SetSchedule(c.sch)
			a := s.BuyOn(0, 4, "late", "k-late")
			if a.Status != http.StatusCreated || a.Order != first.Order || a.Header.Get("Idempotent-Replayed") != "true" {
				t.Fatalf("keyed retry: want 201 replaying %v, got %d %s %v", first.Order.ID, a.Status, a.Code, a.Order.ID)
			}
			a = s.Post(0, "/v1/purchase", `{"buyerId":"late-any"}`, map[string]string{"Idempotency-Key": "k-any"})
			if a.Status != http.StatusCreated || a.Order != anyFirst.Order {
				t.Fatalf("keyed any-seat retry: want 201 replaying %v, got %d %s", anyFirst.Order.ID, a.Status, a.Code)
			}
			if a := s.BuyOn(0, 5, "late", "k-new"); a.Status != c.newStatus || a.Code != c.newCode {
				t.Fatalf("a new key: want %d %s, got %d %s", c.newStatus, c.newCode, a.Status, a.Code)
			}
		})
	}
	// And at the buyer limit, the key still replays. (The any-seat order
	// took a random seat: ask for one it did not, or the answer is
	// ticket_sold.)
	s.Pods[0].Svc.Checkout.SetSchedule(sale.Schedule{})
	free := int64(6)
	if anyFirst.Order.TicketID == free {
		free = 7
	}
	if a := s.BuyOn(0, free, "late", "k-other"); a.Code != "buyer_limit_reached" {
		t.Fatalf("past the limit: want buyer_limit_reached, got %d %s", a.Status, a.Code)
	}
	if a := s.BuyOn(0, 4, "late", "k-late"); a.Status != http.StatusCreated || a.Order != first.Order {
		t.Fatalf("keyed retry at the limit: want the replay, got %d %s", a.Status, a.Code)
	}
}

// Item 3: concurrent any-seat retries of one key all get the one order,
// also when the key's order is the buyer's last one under the limit.
func TestPurchase_ConcurrentAnySeatRetriesOfOneKey_AllGetTheOneOrder(t *testing.T) {
	for _, limit := range []int{0, 1} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			s := newTestSale(t, 200, func(c *purchase.Config) { c.MaxPerBuyer = limit })
			s.AddPod()
			got := newTally()
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Go(func() {
					<-start
					got.add(s.Post(i%2, "/v1/purchase", `{"buyerId":"retrier"}`, map[string]string{"Idempotency-Key": "one-key"}))
				})
			}
			close(start)
			wg.Wait()
			if got.count("201") != 50 {
				t.Fatalf("want 50×201, got %v", got.byCode)
			}
			for _, o := range got.created {
				if o != got.created[0] {
					t.Fatalf("two different orders answered for one key: %+v and %+v", got.created[0], o)
				}
			}
			a := s.Audit()
			if a.Orders != 1 {
				t.Fatalf("want one order in Postgres, got %d", a.Orders)
			}
			a.CheckAgainst(t, got.created, true)
			var av checkout.Availability
			// The seats the losing attempts locked went back: all but one free.
			if s.GetJSON("/v1/availability", &av); av.Available != 199 {
				t.Fatalf("availability %+v, want 199 available", av)
			}
		})
	}
}

// Item 6: the limit is 403 (not auto-retried), answered from the pod's
// memory once known, and counts the orders bought before it was raised.
func TestPurchase_BuyerLimit_403FromMemoryOnceKnown(t *testing.T) {
	s := newTestSale(t, 100, func(c *purchase.Config) { c.MaxPerBuyer = 2 })
	for i := range 2 {
		if a := s.Buy(int64(i)+1, "collector"); a.Status != http.StatusCreated {
			t.Fatalf("purchase %d: %d %s", i, a.Status, a.Code)
		}
	}
	svc := s.Pods[0].Svc
	acquiredBefore := purchasetest.Counter(t, svc, "flux_order_lock_attempts_total", "result", "acquired")
	for i := range 20 {
		a := s.Buy(int64(i)+10, "collector")
		if a.Status != http.StatusForbidden || a.Code != "buyer_limit_reached" {
			t.Fatalf("attempt %d past the limit: want 403 buyer_limit_reached, got %d %s", i, a.Status, a.Code)
		}
	}
	// The first refusal costs a lock and a transaction; the others nothing.
	if n := purchasetest.Counter(t, svc, "flux_order_lock_attempts_total", "result", "acquired") - acquiredBefore; n != 1 {
		t.Fatalf("want 1 lock taken for 20 refused attempts (the first), got %v", n)
	}
	if n := purchasetest.Counter(t, svc, "flux_order_lock_attempts_total", "result", "known_limited"); n != 19 {
		t.Fatalf("want 19 refusals from memory, got %v", n)
	}
	// Raising the limit lets the buyer buy again.
	s.Cfg.MaxPerBuyer = 3
	s.AddPod()
	if a := s.BuyOn(1, 50, "collector", ""); a.Status != http.StatusCreated {
		t.Fatalf("after raising the limit to 3: want 201, got %d %s", a.Status, a.Code)
	}
}

func TestPurchase_LimitRaisedFromZeroMidSale_CountsEarlierOrders(t *testing.T) {
	s := newTestSale(t, 100) // no limit
	for i := range 3 {
		if a := s.Buy(int64(i)+1, "early"); a.Status != http.StatusCreated {
			t.Fatalf("purchase %d: %d %s", i, a.Status, a.Code)
		}
	}
	s.Cfg.MaxPerBuyer = 3
	s.AddPod()
	if a := s.BuyOn(1, 20, "early", ""); a.Status != http.StatusForbidden || a.Code != "buyer_limit_reached" {
		t.Fatalf("3 bought before the limit of 3: want 403 buyer_limit_reached, got %d %s", a.Status, a.Code)
	}
	if a := s.BuyOn(1, 21, "newcomer", ""); a.Status != http.StatusCreated {
		t.Fatalf("another buyer: want 201, got %d %s", a.Status, a.Code)
	}
}

// Issue 17, defect 5: a hold's confirmation that got no answer names its
// order (the 503's orderId), and GET /v1/orders/{orderId} says pending, not
// a premature 404, while that confirmation may still commit: until the
// hold was released, or expired longer ago than a confirmation takes to
// settle. A retried confirmation then writes that very order.
func TestOrder_HoldsOrderID_PendingWhileItsConfirmationMayCommit(t *testing.T) {
	s := newTestSale(t, 10, withHolds(time.Minute))
	ctx := context.Background()
	h := s.hold(0, 3, "doubtful")

	// The confirmation blocks on the hold's row past its 5 s bound.
	tx, err := s.DB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT 1 FROM holds WHERE id = $1 FOR UPDATE`, h.HoldID); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, s.Pods[0].URL+"/v1/holds/"+h.HoldID.String()+"/confirm",
		strings.NewReader(`{"buyerId":"doubtful","paymentRef":"pay-1"}`))
	p, resp, raw := s.problemOf(req)
	if resp.StatusCode != http.StatusServiceUnavailable || p.OrderID == "" {
		t.Fatalf("want 503 naming the order, got %d %s", resp.StatusCode, raw)
	}
	pending := func(what string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, s.Pods[0].URL+"/v1/orders/"+p.OrderID, nil)
		q, resp, raw := s.problemOf(req)
		if resp.StatusCode != http.StatusServiceUnavailable || q.Code != "order_pending" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: GET /v1/orders/%s: want 503 order_pending with Retry-After, got %d %q %s", what, p.OrderID, resp.StatusCode, resp.Header.Get("Retry-After"), raw)
		}
	}
	pending("the hold is live")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// The retried confirmation writes the order the 503 named.
	if a := s.confirmHold(0, h.HoldID, "doubtful", "pay-1"); a.Status != http.StatusCreated || a.Order.ID.String() != p.OrderID {
		t.Fatalf("retried confirmation: %d %s, order %s; want 201 with order %s", a.Status, a.Code, a.Order.ID, p.OrderID)
	}
	var o checkout.Order
	if st := s.GetJSON("/v1/orders/"+p.OrderID, &o); st != http.StatusOK || o.TicketID != 3 || o.BuyerID != "doubtful" {
		t.Fatalf("GET the confirmed order: %d %+v", st, o)
	}

	// Other holds' order ids (their confirmation's 503 would name them).
	orderOf := func(hold uuid.UUID) string {
		return s.Pods[0].Svc.Checkout.HoldOrderID(hold).String()
	}
	get := func(id string) int { return s.GetJSON("/v1/orders/"+id, nil) }
	released := s.hold(0, 4, "doubtful")
	if st := s.releaseHold(0, released.HoldID); st != http.StatusNoContent {
		t.Fatalf("release: %d", st)
	}
	if st := get(orderOf(released.HoldID)); st != http.StatusNotFound {
		t.Fatalf("a released hold's order id: want 404 (final), got %d", st)
	}
	expired := s.hold(0, 5, "doubtful")
	setExpiry := func(ago time.Duration) {
		if _, err := s.DB.Exec(ctx, `UPDATE holds SET expires_at = clock_timestamp() - $2 * interval '1 millisecond' WHERE id = $1`,
			expired.HoldID, ago.Milliseconds()); err != nil {
			t.Fatal(err)
		}
	}
	setExpiry(time.Second)
	p.OrderID = orderOf(expired.HoldID)
	pending("the hold expired a second ago")
	setExpiry(s.Pods[0].Svc.Checkout.SettleAfter() + time.Second)
	if st := get(p.OrderID); st != http.StatusNotFound {
		t.Fatalf("a hold expired longer ago than a confirmation settles: want 404, got %d", st)
	}
	// A keyed hold's order id leads back to it as well; an id no hold has
	// is 404 at once.
	keyed, st, code := s.tryHold(0, 6, "doubtful", "k-6")
	if st != http.StatusCreated {
		t.Fatalf("keyed hold: %d %s", st, code)
	}
	p.OrderID = orderOf(keyed.HoldID)
	pending("a keyed hold is live")
	none := uuid.New()
	none[6] = none[6]&0x0f | 0x80 // a v8 id, as derived ones are
	if st := get(none.String()); st != http.StatusNotFound {
		t.Fatalf("an id of no hold: want 404, got %d", st)
	}
}

// problemOf sends req and decodes the problem it is answered with (zero
// when it is none), with the answer and its raw body.
func (s *testSale) problemOf(req *http.Request) (httpapi.Problem, *http.Response, []byte) {
	s.T.Helper()
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client.Do(req)
	if err != nil {
		s.T.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var p httpapi.Problem
	_ = json.Unmarshal(raw, &p)
	return p, resp, raw
}
