package purchase_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/ssetest"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// cancelAnswer is what the admin API answered.
type cancelAnswer struct {
	status   int
	code     string
	replayed bool
	c        orderstore.Cancellation
}

// cancelOn cancels order id through pod's private port with token ("": no
// Authorization).
func cancelOn(t *testing.T, s *purchasetest.Sale, pod int, id, token, by, reason string) cancelAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"reason": reason, "cancelledBy": by})
	req, err := http.NewRequest(http.MethodPost, s.Pods[pod].PrivateURL+"/admin/v1/orders/"+id+"/cancel", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := cancelAnswer{status: resp.StatusCode, replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &a.c); err != nil {
			t.Fatalf("cancel answer %s: %v", raw, err)
		}
		return a
	}
	var p httpapi.Problem
	_ = json.Unmarshal(raw, &p)
	a.code = p.Code
	return a
}

// count runs a count(*) query on the sale's database.
func count(t *testing.T, s *purchasetest.Sale, query string, args ...any) (n int) {
	t.Helper()
	if err := s.DB.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const cancelledEvents = `SELECT count(*) FROM webhook_events WHERE type = 'order.cancelled'`

// The whole of issue 19's cancellation: a seat sold on pod A and known
// sold by pods B and C is cancelled through the admin API; at once it is
// free on every pod (memory, Redis marker), on the page and in the counts,
// and C sells it again; a repeat answers the first cancellation; the key
// of the cancelled order buys nothing; the order.cancelled event reaches
// the receiver, signed, and none is written for a failed cancel.
func TestCancel_SeatBackOnEveryPod_OnThePage_OneAuditedEventDelivered(t *testing.T) {
	h := newHookedSaleOf(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed, salesv1alpha1.EventOrderCancelled}, 10)
	h.AddPod()
	h.AddPod()
	token := h.Cfg.AdminToken
	sold := h.BuyOn(0, 5, "alice", "key-1")
	if sold.Status != http.StatusCreated {
		t.Fatalf("buy on A: %d %s", sold.Status, sold.Code)
	}
	h.AwaitSoldMarker(5) // written behind the 201; until then: ticket_locked
	for pod := 1; pod <= 2; pod++ {
		if a := h.BuyOn(pod, 5, "mallory", ""); a.Status != http.StatusConflict || a.Code != "ticket_sold" {
			t.Fatalf("pod %d: %d %s, want 409 ticket_sold", pod, a.Status, a.Code)
		}
	}
	// Both remember it now: answered from memory.
	if a := h.BuyOn(2, 5, "mallory", ""); a.Code != "ticket_sold" {
		t.Fatalf("pod C again: %s", a.Code)
	}
	events, stop := ssetest.Open(t, h.Pods[1].URL)
	defer stop()
	ssetest.Next(t, events, "snapshot", 5*time.Second)

	id := sold.Order.ID.String()
	if a := cancelOn(t, h.Sale, 1, id, "", "ops", "chargeback"); a.status != 401 || a.code != "admin_auth_required" {
		t.Fatalf("no token: %+v", a)
	}
	if a := cancelOn(t, h.Sale, 1, id, token+"x", "ops", "chargeback"); a.status != 401 || a.code != "admin_auth_invalid" {
		t.Fatalf("a bad token: %+v", a)
	}
	jobsBefore := count(t, h.Sale, cancelledEvents)
	if a := cancelOn(t, h.Sale, 1, uuid.NewString(), token, "ops", "typo"); a.status != 404 || a.code != "order_not_found" {
		t.Fatalf("an unknown order: %+v", a)
	}
	if n := count(t, h.Sale, cancelledEvents); n != jobsBefore {
		t.Fatalf("a failed cancel wrote %d order.cancelled events", n-jobsBefore)
	}

	a := cancelOn(t, h.Sale, 1, id, token, "ops@example", "chargeback")
	if a.status != 200 || a.replayed || a.c.OrderID != sold.Order.ID || a.c.TicketID != 5 || a.c.BuyerID != "alice" ||
		a.c.CancelledBy != "ops@example" || a.c.Reason != "chargeback" || !a.c.PurchasedAt.Equal(sold.Order.PurchasedAt) {
		t.Fatalf("cancel: %+v, order %+v", a, sold.Order)
	}
	// Pod C hears of it from the sale's channel, well before its poll.
	testservers.Eventually(t, 300*time.Millisecond, 2*time.Millisecond, "pod C forgets the seat was sold", func() error {
		if st, err := h.Pods[2].Svc.Checkout.Ticket(context.Background(), 5); err != nil || st != "available" {
			return fmt.Errorf("%s %v", st, err)
		}
		return nil
	})
	// The page shows it free (before anyone buys it again).
	if c := ssetest.WaitSeat(t, events, 5, ssetest.Available, 2*time.Second); c.Sold != 0 {
		t.Fatalf("the page's counts after the cancel: %+v", c)
	}
	var av struct{ Sold, Available int64 }
	if st := h.GetJSON("/v1/availability", &av); st != 200 || av.Sold != 0 || av.Available != 10 {
		t.Fatalf("availability after the cancel: %d %+v", st, av)
	}
	if _, ok, err := h.Locks().Peek(context.Background(), 5); err != nil || ok {
		t.Fatalf("the sold marker must be gone from Redis: %v %v", ok, err)
	}
	// Pod C, which knew the seat sold, sells it again at once.
	start := time.Now()
	var resold purchasetest.Answer
	testservers.Eventually(t, 2*time.Second, 5*time.Millisecond, "pod C sells the cancelled seat", func() error {
		if resold = h.BuyOn(2, 5, "bob", ""); resold.Status != http.StatusCreated {
			return fmt.Errorf("%d %s", resold.Status, resold.Code)
		}
		return nil
	})
	t.Logf("resold on pod C %v after the checks above (busy machine)", time.Since(start))
	if resold.Order.ID == sold.Order.ID {
		t.Fatal("the resale must be a new order")
	}
	h.AwaitSoldMarker(5)

	// Idempotent: the first record, one audit row, one event.
	again := cancelOn(t, h.Sale, 0, id, token, "someone else", "another reason")
	if again.status != 200 || !again.replayed || again.c != a.c {
		t.Fatalf("a repeat: %+v, want the first %+v", again, a.c)
	}
	if n := count(t, h.Sale, `SELECT count(*) FROM order_cancellations`); n != 1 {
		t.Fatalf("%d audit rows", n)
	}
	if n := count(t, h.Sale, cancelledEvents); n != jobsBefore+1 {
		t.Fatalf("%d order.cancelled events, want 1", n-jobsBefore)
	}

	// The cancelled order's key buys nothing, and its order answers
	// cancelled. On its seat, resold to bob, Redis refuses it first
	// (ticket_sold, no lookup on the hot path); on a free seat Postgres
	// names the cancelled order.
	for pod := range 3 {
		if r := h.BuyOn(pod, 5, "alice", "key-1"); r.Status != http.StatusConflict || (r.Code != "ticket_sold" && r.Code != "order_cancelled") {
			t.Fatalf("pod %d: a retry of the cancelled key on its resold seat: %d %s", pod, r.Status, r.Code)
		}
		if r := h.BuyOn(pod, 6, "alice", "key-1"); r.Status != http.StatusConflict || r.Code != "order_cancelled" || r.OrderID != id {
			t.Fatalf("pod %d: the key on a free seat: %d %s %s", pod, r.Status, r.Code, r.OrderID)
		}
	}
	if r := h.Post(0, "/v1/purchase", `{"buyerId":"alice"}`, map[string]string{"Content-Type": "application/json", "Idempotency-Key": "key-1"}); r.Code != "order_cancelled" {
		t.Fatalf("the key on an any-seat purchase: %d %s", r.Status, r.Code)
	}
	req, _ := http.NewRequest(http.MethodGet, h.Pods[0].URL+"/v1/orders/"+id, nil)
	if r := h.Do(req); r.Status != http.StatusConflict || r.Code != "order_cancelled" || r.OrderID != id {
		t.Fatalf("GET the cancelled order: %d %s", r.Status, r.Code)
	}
	if n := count(t, h.Sale, `SELECT count(*) FROM orders WHERE buyer_id = 'alice'`); n != 0 {
		t.Fatalf("alice's cancelled key bought %d orders", n)
	}

	// The event reaches the receiver, signed (the reference library too).
	eid := "order.cancelled:" + id
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "order.cancelled delivered", func() error {
		if _, ok := h.Events()[eid]; !ok {
			return fmt.Errorf("not yet (%s)", h.recv.Stats())
		}
		return nil
	})
	if err := h.verifiesUnder(eid, secretOld); err != nil {
		t.Fatal(err)
	}
	var b delivery.Body
	var got orderstore.Cancellation
	if err := json.Unmarshal(h.Events()[eid], &b); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b.Data, &got); err != nil {
		t.Fatal(err)
	}
	if b.Type != "order.cancelled" || !b.Timestamp.Equal(a.c.CancelledAt) || got != a.c {
		t.Fatalf("event body %s, want the cancellation %+v", h.Events()[eid], a.c)
	}
	var confirmed delivery.Body
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "order.confirmed delivered", func() error {
		body, ok := h.Events()[id]
		if !ok {
			return fmt.Errorf("not yet")
		}
		return json.Unmarshal(body, &confirmed)
	})
	if confirmed.Sequence >= b.Sequence {
		t.Fatalf("the cancellation's sequence %d must follow its confirmation's %d", b.Sequence, confirmed.Sequence)
	}
	if st := h.recv.Stats(); st.BadSignatures != 0 || h.independent.Load() != 0 {
		t.Fatalf("bad signatures: %s, reference refused %d", st, h.independent.Load())
	}
	if n := purchasetest.Counter(t, h.Pods[1].Svc, "flux_order_orders_cancelled_total"); n != 1 {
		t.Fatalf("pod B counted %v cancellations, want 1", n)
	}
	if n := purchasetest.Counter(t, h.Pods[1].Svc, "flux_order_admin_requests_total", "outcome", "admin_auth_invalid", "status", "401"); n != 1 {
		t.Fatalf("pod B counted %v bad tokens", n)
	}
}

// The buyer's count drops: a buyer at the limit buys again once one of
// their orders is cancelled, also on a pod that remembered them at the
// limit; and a hold's order cancels the same way.
func TestCancel_BuyerAtTheLimitBuysAgain_HoldOrdersToo(t *testing.T) {
	s := newTestSale(t, 10, func(c *purchase.Config) { c.MaxPerBuyer = 2; c.HoldTTL = time.Minute })
	s.AddPod()
	first := s.BuyOn(0, 1, "carol", "")
	hold := s.hold(0, 2, "carol")
	viaHold := s.confirmHold(0, hold.HoldID, "carol", "pay-1")
	if first.Status != http.StatusCreated || viaHold.Status != http.StatusCreated {
		t.Fatalf("buys: %d %d %s", first.Status, viaHold.Status, viaHold.Code)
	}
	for range 2 { // the second is answered from pod 1's memory of carol
		if a := s.BuyOn(1, 3, "carol", ""); a.Status != http.StatusForbidden || a.Code != "buyer_limit_reached" {
			t.Fatalf("at the limit: %d %s", a.Status, a.Code)
		}
	}
	if n := purchasetest.Counter(t, s.Pods[1].Svc, "flux_order_lock_attempts_total", "result", "known_limited"); n < 1 {
		t.Fatalf("pod 1 must remember carol at the limit (known_limited %v)", n)
	}
	if a := cancelOn(t, s.Sale, 0, viaHold.Order.ID.String(), s.Cfg.AdminToken, "ops", "refund"); a.status != 200 || a.c.HoldID != hold.HoldID || a.c.PaymentRef != "pay-1" {
		t.Fatalf("cancel the hold's order: %+v", a)
	}
	testservers.Eventually(t, 2*time.Second, 5*time.Millisecond, "carol buys again on pod 1", func() error {
		if a := s.BuyOn(1, 3, "carol", ""); a.Status != http.StatusCreated {
			return fmt.Errorf("%d %s", a.Status, a.Code)
		}
		return nil
	})
	// The hold's confirmation, retried, answers the cancellation.
	if r := s.confirmHold(1, hold.HoldID, "carol", "pay-1"); r.Status != http.StatusConflict || r.Code != "order_cancelled" {
		t.Fatalf("a repeated confirm of the cancelled hold order: %d %s", r.Status, r.Code)
	}
	// The hold's seat is free again.
	if a := s.BuyOn(1, 2, "dave", ""); a.Status != http.StatusCreated {
		t.Fatalf("the hold's seat: %d %s", a.Status, a.Code)
	}
}

// A pod that missed the announcement (not subscribed: here, a message
// lost) learns the cancellation from its poll within about a second; and a
// stale "sold" written after the cancel (a fence refusal computed before
// it) is undone by the next poll.
func TestCancel_MissedAnnouncementAndStaleSoldMark_UndoneByThePoll(t *testing.T) {
	s := newTestSale(t, 5)
	s.AddPod()
	o := s.BuyOn(0, 3, "erin", "")
	if o.Status != http.StatusCreated {
		t.Fatal(o.Code)
	}
	s.AwaitSoldMarker(3)
	if a := s.BuyOn(1, 3, "x", ""); a.Code != "ticket_sold" {
		t.Fatal(a.Code)
	}
	// Cancel in Postgres only, as if the pod that did it died before
	// clearing Redis and announcing it.
	if _, err := s.DB.Exec(context.Background(), `SELECT * FROM cancel_order($1, 'ops', 'test')`, o.Order.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testservers.Eventually(t, 3*time.Second, 20*time.Millisecond, "pod 1 sells the seat again", func() error {
		if a := s.BuyOn(1, 3, "frank", ""); a.Status != http.StatusCreated {
			return fmt.Errorf("%d %s", a.Status, a.Code)
		}
		return nil
	})
	t.Logf("learnt from the poll after %v", time.Since(start))

	// A stale mark: a pod writes the cancelled order's marker after the
	// cancel; the poll removes it (the window), a resale's marker stays.
	o2 := s.BuyOn(0, 4, "gina", "")
	if _, err := s.DB.Exec(context.Background(), `SELECT * FROM cancel_order($1, 'ops', 'test')`, o2.Order.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // a poll ran
	locks := s.Locks()
	if err := locks.MarkSold(context.Background(), 4, o2.Order.ID.String()); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 3*time.Second, 20*time.Millisecond, "the stale marker removed", func() error {
		if r, ok, err := locks.Peek(context.Background(), 4); err != nil || ok {
			return fmt.Errorf("marker %+v %v %v", r, ok, err)
		}
		return nil
	})
	if _, err := locks.Unsell(context.Background(), []seatlock.SoldSeat{{ID: 3, OrderID: o.Order.ID.String()}}); err != nil {
		t.Fatal(err)
	}
	if r, ok, err := locks.Peek(context.Background(), 3); err != nil || !ok || r.State != seatlock.Sold {
		t.Fatalf("the resale's marker must stay: %+v %v %v", r, ok, err)
	}
}

// A fence refusal that raced the cancellation (refuse_seat's DETAIL empty:
// the order vanished between its reads) wrote an owner-less "sold:" marker
// after the cancel cleared Redis (older pods still may): the poll's
// re-application removes it too, and the seat sells again.
func TestCancel_StaleOwnerlessSoldMark_UndoneByThePoll(t *testing.T) {
	s := newTestSale(t, 5)
	s.AddPod()
	o := s.BuyOn(0, 3, "erin", "")
	if o.Status != http.StatusCreated {
		t.Fatal(o.Code)
	}
	if a := cancelOn(t, s.Sale, 0, o.Order.ID.String(), s.Cfg.AdminToken, "ops", "chargeback"); a.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", a.status, a.code)
	}
	locks := s.Locks()
	if err := locks.MarkSold(context.Background(), 3, ""); err != nil { // as markSold(id, "") wrote it
		t.Fatal(err)
	}
	start := time.Now()
	testservers.Eventually(t, 3*time.Second, 20*time.Millisecond, "the seat sells again", func() error {
		if a := s.BuyOn(1, 3, "frank", ""); a.Status != http.StatusCreated {
			return fmt.Errorf("%d %s", a.Status, a.Code)
		}
		return nil
	})
	t.Logf("the owner-less marker went after %v", time.Since(start))
}

// A storm buys 200 seats on 3 pods while 50 of the sold ones are
// cancelled mid-storm, then the rest is resold: every seat has at most
// one live order, the audit 50 rows, and Postgres and every pod agree on
// the counts.
func TestCancel_DuringAStorm_NoDoubleSale_CountsAgree(t *testing.T) {
	const seats, cancels = 200, 50
	s := newTestSale(t, seats)
	s.AddPod()
	s.AddPod()
	var mu sync.Mutex
	var sold []uuid.UUID
	var cancelled atomic.Int64
	stormDone := make(chan struct{})
	go func() {
		defer close(stormDone)
		storm(1500, 32, func(i int) {
			a := s.BuyOn(i%3, int64(rand.IntN(seats))+1, fmt.Sprintf("buyer-%d", i), "")
			if a.Status == http.StatusCreated {
				mu.Lock()
				sold = append(sold, a.Order.ID)
				mu.Unlock()
			}
		})
	}()
	for cancelled.Load() < cancels {
		mu.Lock()
		var id uuid.UUID
		if len(sold) > 0 {
			id, sold = sold[0], sold[1:]
		}
		mu.Unlock()
		if id == uuid.Nil {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if a := cancelOn(t, s.Sale, int(cancelled.Load())%3, id.String(), s.Cfg.AdminToken, "ops", "storm"); a.status != 200 {
			t.Fatalf("cancel %s: %+v", id, a)
		}
		cancelled.Add(1)
	}
	<-stormDone
	// Resell what is left, through every pod. A ticket_sold must be the
	// truth within a poll: an order cancelled right after its 201 may see
	// its marker land after the cancellation removed it (the marker is
	// written behind the answer), until the next poll removes it again.
	for seat := int64(1); seat <= seats; seat++ {
		testservers.Eventually(t, 3*time.Second, 10*time.Millisecond, fmt.Sprintf("seat %d sold", seat), func() error {
			a := s.BuyOn(int(seat)%3, seat, fmt.Sprintf("late-%d", seat), "")
			if a.Status == http.StatusCreated {
				return nil
			}
			if a.Code == "ticket_sold" {
				if n := count(t, s.Sale, `SELECT count(*) FROM tickets WHERE id = $1 AND sold`, seat); n != 1 {
					return fmt.Errorf("409 ticket_sold for a seat Postgres calls free")
				}
				return nil
			}
			return fmt.Errorf("%d %s", a.Status, a.Code)
		})
	}
	ctx := context.Background()
	if n := count(t, s.Sale, `SELECT count(*) FROM order_cancellations`); n != cancels {
		t.Fatalf("%d audit rows, want %d", n, cancels)
	}
	if n := count(t, s.Sale, `SELECT count(*) FROM (SELECT ticket_id FROM orders GROUP BY ticket_id HAVING count(*) > 1) d`); n != 0 {
		t.Fatalf("%d seats with two live orders", n)
	}
	orders := count(t, s.Sale, `SELECT count(*) FROM orders`)
	flagged := count(t, s.Sale, `SELECT count(*) FROM tickets WHERE sold`)
	joined := count(t, s.Sale, `SELECT count(*) FROM tickets t JOIN orders o ON o.ticket_id = t.id WHERE t.sold`)
	if orders != seats || flagged != seats || joined != seats {
		t.Fatalf("orders %d, seats flagged sold %d, joined %d, want %d each", orders, flagged, joined, seats)
	}
	if n := count(t, s.Sale, `SELECT sum(tickets)::int FROM buyers`); n != seats {
		t.Fatalf("buyers count %d orders, want %d", n, seats)
	}
	for i, p := range s.Pods {
		a, err := p.Svc.Checkout.Availability(ctx)
		if err != nil || a.Sold != seats || a.Available != 0 {
			t.Fatalf("pod %d reports %+v %v", i, a, err)
		}
		if n, err := p.Svc.Checkout.Cancelled(ctx); err != nil || n != cancels {
			t.Fatalf("pod %d reports %d cancelled %v", i, n, err)
		}
	}
}
