package purchase_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/delivery"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

// Two signing secrets of the Standard Webhooks form.
const (
	secretOld = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secretNew = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
)

// hookedSale is a sale whose pods deliver to one receiver on 127.0.0.1,
// which checks every delivery with the Standard Webhooks reference
// library as well as with our own Verify.
type hookedSale struct {
	*testSale
	file string
	recv *delivery.Receiver
	url  string
	// independent counts deliveries the reference library refused.
	independent atomic.Int64
	verifiers   []*standardwebhooks.Webhook
	// last is each webhook-id's last attempt (body and headers).
	last sync.Map
	// events are the webhook's (default order.confirmed).
	events []salesv1alpha1.WebhookEvent
}

type attempt struct {
	body   []byte
	header http.Header
}

// Events are the kept events by webhook-id.
func (h *hookedSale) Events() map[string][]byte { return h.recv.Events() }

// verifiesUnder checks id's last delivery with the reference library and
// secret alone.
func (h *hookedSale) verifiesUnder(id, secret string) error {
	v, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	a, ok := h.last.Load(id)
	if !ok {
		return fmt.Errorf("no delivery of %s", id)
	}
	if err := v.Verify(a.(attempt).body, a.(attempt).header); err != nil {
		return fmt.Errorf("delivery %s under %s: %w", id, secret[:10], err)
	}
	return nil
}

// newHookedSale starts a sale of tickets seats with one pod, whose one
// webhook "orders" (order.confirmed) points at a fresh receiver.
func newHookedSale(t *testing.T, tickets int64, opts ...func(*purchase.Config)) *hookedSale {
	t.Helper()
	return newHookedSaleOf(t, nil, tickets, opts...)
}

// newHookedSaleOf is newHookedSale with the webhook's events.
func newHookedSaleOf(t *testing.T, events []salesv1alpha1.WebhookEvent, tickets int64, opts ...func(*purchase.Config)) *hookedSale {
	t.Helper()
	return newHookedSaleFrom(t, events, true, tickets, opts...)
}

// newHookedSaleFrom is newHookedSaleOf whose file lists the webhook from
// the start (listed) or no webhook (the test writes it later).
func newHookedSaleFrom(t *testing.T, events []salesv1alpha1.WebhookEvent, listed bool, tickets int64, opts ...func(*purchase.Config)) *hookedSale {
	t.Helper()
	h := &hookedSale{file: filepath.Join(t.TempDir(), "webhooks.json"), recv: delivery.NewReceiver(secretOld), events: events}
	h.setVerifiers(t, secretOld)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ok := false
		for _, v := range h.verifiersNow() {
			ok = ok || v.Verify(body, r.Header) == nil
		}
		if !ok {
			h.independent.Add(1)
		}
		h.last.Store(r.Header.Get(delivery.HeaderID), attempt{body: body, header: r.Header.Clone()})
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.recv.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hooks"
	if listed {
		h.writeWebhooks(t, "", secretOld)
	} else {
		h.writeWebhooksNone(t)
	}
	opts = append([]func(*purchase.Config){func(c *purchase.Config) {
		c.Delivery = delivery.Config{
			File: h.file, Schedule: delivery.DefaultSchedule(time.Millisecond),
			PollInterval: 20 * time.Millisecond, FollowInterval: 20 * time.Millisecond, AttemptTimeout: 2 * time.Second,
		}
	}}, opts...)
	h.testSale = newTestSale(t, tickets, opts...)
	return h
}

var verifierMu sync.Mutex

func (h *hookedSale) setVerifiers(t *testing.T, secrets ...string) {
	t.Helper()
	var vs []*standardwebhooks.Webhook
	for _, s := range secrets {
		v, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	verifierMu.Lock()
	h.verifiers = vs
	verifierMu.Unlock()
}

func (h *hookedSale) verifiersNow() []*standardwebhooks.Webhook {
	verifierMu.Lock()
	defer verifierMu.Unlock()
	return h.verifiers
}

// writeWebhooks replaces the file as the kubelet does (a new file renamed
// over the old one).
func (h *hookedSale) writeWebhooks(t *testing.T, redeliver string, secrets ...string) {
	t.Helper()
	f := salesv1alpha1.WebhooksFile{RedeliverDead: redeliver, Webhooks: []salesv1alpha1.ResolvedWebhook{{
		Name: "orders", URL: h.url, SigningSecrets: secrets, InsecureHTTP: true,
		Events: h.events,
	}}}
	if len(h.events) == 0 {
		f.Webhooks[0].Events = []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	tmp := h.file + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, h.file); err != nil {
		t.Fatal(err)
	}
}

// mustBuy buys seats from..to, one buyer each, and fails the test on any
// refusal.
func (h *hookedSale) mustBuy(t *testing.T, from, to int64) {
	t.Helper()
	for seat := from; seat <= to; seat++ {
		if a := h.Buy(seat, fmt.Sprintf("b%d", seat)); a.Status != http.StatusCreated {
			t.Fatalf("buy seat %d: %d %s", seat, a.Status, a.Code)
		}
	}
}

// answerWhile answers ok while good says so, else bad.
func answerWhile(good *atomic.Bool, bad int) func(string, int) int {
	return func(string, int) int {
		if good.Load() {
			return http.StatusOK
		}
		return bad
	}
}

// orders are the sale's orders in PostgreSQL, by id.
func (h *hookedSale) orders(t *testing.T) map[string]orderstore.Order {
	t.Helper()
	rows, err := h.DB.Query(context.Background(), `SELECT id, ticket_id, buyer_id, purchased_at, coalesce(hold_id, '00000000-0000-0000-0000-000000000000'), coalesce(payment_ref, '') FROM orders`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]orderstore.Order{}
	for rows.Next() {
		var o orderstore.Order
		if err := rows.Scan(&o.ID, &o.TicketID, &o.BuyerID, &o.PurchasedAt, &o.HoldID, &o.PaymentRef); err != nil {
			t.Fatal(err)
		}
		out[o.ID.String()] = o
	}
	return out
}

// checkEvents says whether the receiver holds exactly one event per order,
// each body equal to its order.
func (h *hookedSale) checkEvents(orders map[string]orderstore.Order) error {
	events := h.recv.Events()
	if len(events) != len(orders) {
		return fmt.Errorf("%d orders, %d events (%s)", len(orders), len(events), h.recv.Stats())
	}
	for id, body := range events {
		o, ok := orders[id]
		if !ok {
			return fmt.Errorf("event %s has no order", id)
		}
		var b delivery.Body
		var got orderstore.Order
		if err := json.Unmarshal(body, &b); err != nil {
			return err
		}
		if err := json.Unmarshal(b.Data, &got); err != nil {
			return err
		}
		if b.Type != "order.confirmed" || b.Sequence <= 0 || !b.Timestamp.Equal(o.PurchasedAt) ||
			got.ID != o.ID || got.TicketID != o.TicketID || got.BuyerID != o.BuyerID || !got.PurchasedAt.Equal(o.PurchasedAt) ||
			got.HoldID != o.HoldID || got.PaymentRef != o.PaymentRef {
			return fmt.Errorf("event %s: body %s, order %+v", id, body, o)
		}
	}
	return nil
}

func TestDelivery_StormFromTwoPods_EveryCommittedOrderOneEvent_RefusedNone(t *testing.T) {
	const seats, attempts = 300, 1500
	h := newHookedSale(t, seats, func(c *purchase.Config) { c.MaxPerBuyer = 2 })
	h.AddPod()
	got := newTally()
	storm(attempts, 64, func(i int) {
		// Contested seats, and buyers who hit the limit of 2.
		got.add(h.BuyOn(i%2, int64(rand.IntN(seats))+1, fmt.Sprintf("buyer-%d", rand.IntN(200)), ""))
	})
	if got.count("403 buyer_limit_reached") == 0 || got.count("409 ticket_locked")+got.count("409 ticket_sold") == 0 {
		t.Fatalf("the storm must force refusals (limit and lost seats), got %v", got.byCode)
	}
	orders := h.orders(t)
	if len(orders) != got.count("201") {
		t.Fatalf("%d orders in PostgreSQL, %d answered 201", len(orders), got.count("201"))
	}
	testservers.Eventually(t, 30*time.Second, 50*time.Millisecond, "one event per committed order", func() error {
		return h.checkEvents(orders)
	})
	if st := h.recv.Stats(); st.BadSignatures != 0 || h.independent.Load() != 0 {
		t.Fatalf("every delivery must verify (ours and the reference library): %s, %d refused by the reference library", st, h.independent.Load())
	}
	// The receiver always acknowledged: the fan-out delivered each order
	// itself, in one attempt, and counted it (one row per webhook and
	// batch); no River job at all. (The counts commit with the fan-out's
	// batch, after the 2xx.)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "each order counted delivered, no River job", func() error {
		var done, jobs int
		err := h.DB.QueryRow(context.Background(), `SELECT (SELECT coalesce(sum(delivered), 0) FROM webhook_delivered),
				(SELECT count(*) FROM river_job)`).Scan(&done, &jobs)
		if err == nil && (done != len(orders) || jobs != 0) {
			err = fmt.Errorf("%d delivered by the fan-out for %d orders, %d River jobs", done, len(orders), jobs)
		}
		return err
	})
	t.Logf("%d orders of %d purchases: %s", len(orders), attempts, h.recv.Stats())
}

func TestDelivery_RolledBackConfirmation_NoEvent(t *testing.T) {
	h := newHookedSale(t, 5)
	// A confirmation that inserts an order and is then rolled back (the
	// Postgres side of a crash before the commit): the outbox row goes
	// with it.
	tx, err := h.DB.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(context.Background(), `SELECT * FROM confirm_purchases(ARRAY[4]::bigint[], ARRAY[gen_random_uuid()], ARRAY['ghost'], ARRAY[NULL::text], 0)`); err != nil {
		t.Fatal(err)
	}
	var inTx int
	if err := tx.QueryRow(context.Background(), `SELECT count(*) FROM webhook_events WHERE type = 'order.confirmed'`).Scan(&inTx); err != nil || inTx != 1 {
		t.Fatalf("inside the confirmation's transaction its event must exist: %d, %v", inTx, err)
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}
	h.mustBuy(t, 2, 2)
	orders := h.orders(t)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the committed order's event only", func() error {
		return h.checkEvents(orders)
	})
	var events int
	if err := h.DB.QueryRow(context.Background(), `SELECT count(*) FROM webhook_events WHERE type = 'order.confirmed'`).Scan(&events); err != nil || events != 1 {
		t.Fatalf("want the one committed order's event in the outbox, got %d (%v)", events, err)
	}
}

func TestDelivery_Receiver500ThreeTimes_DeliveredWithTheSameWebhookID(t *testing.T) {
	h := newHookedSale(t, 5)
	var mu sync.Mutex
	ids := map[string][]string{} // webhook-id -> the bodies of its attempts
	h.recv.Answer = func(id string, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		ids[id] = append(ids[id], id)
		if attempt < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	}
	h.mustBuy(t, 1, 3)
	orders := h.orders(t)
	testservers.Eventually(t, 20*time.Second, 20*time.Millisecond, "each order delivered after three 500s", func() error {
		return h.checkEvents(orders)
	})
	for id := range orders {
		if n := h.recv.Attempts(id); n != 4 {
			t.Errorf("order %s: want 4 attempts of webhook-id %s (3 refused, 1 kept), got %d", id, id, n)
		}
	}
	if st := h.recv.Stats(); st.Duplicates != 0 || st.BadSignatures != 0 {
		t.Errorf("receiver: %s", st)
	}
}

func TestDelivery_KeyRotation_BothSecretsSignDuringTheWindow_ThenOnlyTheNew(t *testing.T) {
	h := newHookedSale(t, 10)
	seat := int64(0)
	// deliveredAfterChange buys until a delivery verifies as want says
	// (the pods follow the file within FollowInterval), and returns it.
	deliveredAs := func(what string, want func(id string) error) {
		t.Helper()
		testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, what, func() error {
			seat++
			a := h.Buy(seat, fmt.Sprintf("b%d", seat))
			if a.Status != http.StatusCreated {
				t.Fatalf("buy: %d %s", a.Status, a.Code)
			}
			id := a.Order.ID.String()
			testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "the delivery of "+id, testservers.Holds(func() bool {
				_, ok := h.Events()[id]
				return ok
			}))
			return want(id)
		})
	}

	// The window: the Secret holds the new and the old; every delivery
	// carries both signatures, so receivers with either verify.
	h.recv.Secrets = []string{secretOld, secretNew}
	h.setVerifiers(t, secretOld, secretNew)
	h.writeWebhooks(t, "", secretNew, secretOld)
	deliveredAs("a delivery verified by each secret alone", func(id string) error {
		if err := h.verifiesUnder(id, secretOld); err != nil {
			return err
		}
		return h.verifiesUnder(id, secretNew)
	})

	// After the window: the new one only.
	h.writeWebhooks(t, "", secretNew)
	deliveredAs("a delivery verified by the new secret only", func(id string) error {
		if err := h.verifiesUnder(id, secretNew); err != nil {
			return err
		}
		if h.verifiesUnder(id, secretOld) == nil {
			return fmt.Errorf("delivery %s still verifies under the old secret", id)
		}
		return nil
	})
	if h.independent.Load() != 0 {
		t.Fatalf("%d deliveries refused by the reference library", h.independent.Load())
	}
}

// A pod stopped while its attempt is in flight: another pod delivers.
// The fan-out's own first attempt runs to its end when its pod stops (its
// batch is not cut short, so the 2xx it got are kept): here it times out
// and is recorded as pod a's failed attempt, and pod b delivers the retry;
// an attempt of River's workers (NoInline, or any retry) is rescued. Either
// way pod a made the first attempt and pod b the one that delivered.
func TestDelivery_PodKilledMidDelivery_AnotherPodDelivers(t *testing.T) {
	for _, c := range []struct {
		name     string
		noInline bool
	}{
		{"first attempt by the fan-out", false},
		{"attempt by River's workers", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHookedSale(t, 5, func(cfg *purchase.Config) { cfg.PodName = "pod-a"; cfg.Delivery.NoInline = c.noInline })
			// The receiver holds the first attempt until its sender is gone.
			held := make(chan struct{})
			var first atomic.Bool
			release := make(chan struct{})
			h.recv.Answer = func(id string, attempt int) int {
				if first.CompareAndSwap(false, true) {
					close(held)
					<-release
					return http.StatusServiceUnavailable // too late: the sender stopped waiting
				}
				return http.StatusOK
			}
			defer close(release)
			h.mustBuy(t, 1, 1)
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("no delivery attempt reached the receiver")
			}
			// Pod b starts; pod a is killed (its loops' context ends) while its
			// attempt is in flight.
			h.Run(func(cfg *purchase.Config) { cfg.PodName = "pod-b" }, nil)
			h.Pods[0].Stop()
			orders := h.orders(t)
			testservers.Eventually(t, 20*time.Second, 20*time.Millisecond, "the event delivered by pod b", func() error {
				return h.checkEvents(orders)
			})
			// The delivery's row commits after the receiver's 2xx (the
			// fan-out's transaction, River's completion).
			testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the delivery recorded", func() error {
				var by []string
				err := h.DB.QueryRow(context.Background(), `SELECT attempted_by FROM river_job WHERE kind = 'flux_order_webhook' AND state = 'completed'`).Scan(&by)
				if err == nil && (len(by) < 2 || by[0] != "pod-a" || by[len(by)-1] != "pod-b") {
					err = fmt.Errorf("want the delivery attempted first by pod-a and delivered by pod-b; attempted_by %v", by)
				}
				return err
			})
		})
	}
}

func TestDelivery_EndpointBackAfterOutage_BacklogPulledForward(t *testing.T) {
	// A schedule in 50 ms units: after seven failures an event waits 3.2 s
	// (±20%).
	h := newHookedSale(t, 40, func(c *purchase.Config) {
		c.Delivery.Schedule = delivery.Schedule{Unit: 50 * time.Millisecond, Cap: 3600, Period: 86400}
	})
	var up atomic.Bool
	h.recv.Answer = answerWhile(&up, http.StatusServiceUnavailable)
	h.mustBuy(t, 1, 30)
	// Wait until every event has failed seven times: each now waits 2.56 s
	// or more for its next attempt.
	testservers.Eventually(t, 30*time.Second, 20*time.Millisecond, "seven failed attempts of each event", func() error {
		var behind int
		err := h.DB.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'flux_order_webhook' AND attempt < 7`).Scan(&behind)
		if err == nil && behind > 0 {
			err = fmt.Errorf("%d deliveries have failed fewer than seven times", behind)
		}
		return err
	})
	up.Store(true)
	back := time.Now()
	h.mustBuy(t, 31, 31) // a fresh event: its first attempt succeeds
	orders := h.orders(t)
	testservers.Eventually(t, 20*time.Second, 10*time.Millisecond, "the backlog drained", func() error {
		return h.checkEvents(orders)
	})
	// Without the pull, they would wait out their 3.2 s (±20%).
	if took := time.Since(back); took > 1200*time.Millisecond {
		t.Fatalf("the backlog took %s to drain after the endpoint came back: its retries were not pulled forward", took)
	}
}

func TestDelivery_DeadEvents_KeptCounted_RedeliveredByToken(t *testing.T) {
	// Three attempts in all (waits of 1 and 2 ms): then dead.
	h := newHookedSale(t, 5, func(c *purchase.Config) {
		c.Delivery.Schedule = delivery.Schedule{Unit: time.Millisecond, Cap: 2, Period: 3}
	})
	var up atomic.Bool
	h.recv.Answer = answerWhile(&up, http.StatusBadGateway)
	h.mustBuy(t, 1, 2)
	d := h.Pods[0].Svc.Delivery
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "two dead events", func() error {
		cs, err := d.Counts(context.Background())
		if err != nil {
			return err
		}
		if len(cs) != 1 || cs[0].Dead != 2 || cs[0].Pending != 0 || cs[0].Delivered != 0 {
			return fmt.Errorf("counts %+v", cs)
		}
		return nil
	})
	if n := h.recv.Attempts(h.anyOrderID(t)); n != 3 {
		t.Fatalf("want 3 attempts before dead, got %d", n)
	}
	up.Store(true)
	h.writeWebhooks(t, "2026-12-05T10:00", secretOld)
	orders := h.orders(t)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the dead events redelivered", func() error {
		return h.checkEvents(orders)
	})
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "counted delivered", func() error {
		cs, err := d.Counts(context.Background())
		if err == nil && (cs[0].Dead != 0 || cs[0].Delivered != 2 || cs[0].Pending != 0) {
			err = fmt.Errorf("after redelivery: %+v", cs)
		}
		return err
	})
}

func (h *hookedSale) anyOrderID(t *testing.T) string {
	for id := range h.orders(t) {
		return id
	}
	t.Fatal("no order")
	return ""
}

func TestDelivery_SaleEvents_OnSaleSoldOutEnded_EachOnceFromTwoPods(t *testing.T) {
	ends := time.Now().Add(3 * time.Second).Truncate(time.Second)
	h := newHookedSaleOf(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventSaleOnSale, salesv1alpha1.EventSaleSoldOut, salesv1alpha1.EventSaleEnded},
		3, func(c *purchase.Config) { c.Schedule.EndsAt = ends })
	h.AddPod()
	sale := h.Cfg.Sale
	onSale, soldOut, ended := "sale.on_sale:"+sale, "sale.sold_out:"+sale, "sale.ended:"+sale
	// Buy once the sale is on sale, so the events come in their order.
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "sale.on_sale", testservers.Holds(func() bool {
		_, ok := h.Events()[onSale]
		return ok
	}))
	h.mustBuy(t, 1, 3)
	testservers.Eventually(t, 15*time.Second, 20*time.Millisecond, "sale.sold_out and sale.ended", testservers.Holds(func() bool {
		ev := h.Events()
		return ev[soldOut] != nil && ev[ended] != nil
	}))
	ev := h.Events()
	if len(ev) != 3 {
		t.Fatalf("want the three sale events only (the webhook takes no orders), got %d", len(ev))
	}
	var bodies [3]delivery.Body
	for i, id := range []string{onSale, soldOut, ended} {
		if err := json.Unmarshal(ev[id], &bodies[i]); err != nil {
			t.Fatal(err)
		}
		var d delivery.SaleData
		if err := json.Unmarshal(bodies[i].Data, &d); err != nil || d.Sale != sale || d.Tickets != 3 || d.EndsAt == nil || !d.EndsAt.Equal(ends) {
			t.Fatalf("event %s: data %s (%v)", id, bodies[i].Data, err)
		}
		if i > 0 && bodies[i].Sequence <= bodies[i-1].Sequence {
			t.Errorf("sequence of %s (%d) not after the previous event's (%d)", id, bodies[i].Sequence, bodies[i-1].Sequence)
		}
	}
	if !bodies[2].Timestamp.Equal(ends) {
		t.Errorf("sale.ended at %s, want endsAt %s", bodies[2].Timestamp, ends)
	}
	var rows int
	if err := h.DB.QueryRow(context.Background(), `SELECT count(*) FROM webhook_events WHERE type LIKE 'sale.%'`).Scan(&rows); err != nil || rows != 3 {
		t.Fatalf("want each sale event recorded once by the two pods, got %d (%v)", rows, err)
	}
}

// writeWebhooksNone leaves the sale without webhooks.
func (h *hookedSale) writeWebhooksNone(t *testing.T) {
	t.Helper()
	tmp := h.file + ".new"
	if err := os.WriteFile(tmp, []byte(`{"webhooks":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, h.file); err != nil {
		t.Fatal(err)
	}
}

// restartableReceiver serves h's receiver on one fixed loopback port and
// can be stopped and started again there (its memory, the events kept,
// survives, as a receiver's database would).
type restartableReceiver struct {
	addr string
	h    http.Handler
	mu   sync.Mutex
	srv  *http.Server
}

func (r *restartableReceiver) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.h}
	go func() { _ = srv.Serve(ln) }()
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
}

func (r *restartableReceiver) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.srv.Close()
}

// The storm of issue 19, scaled by FLUX_ORDER_STORM_SEATS (default 2,000;
// the 10,000 with a 30 s outage: FLUX_ORDER_STORM_SEATS=10000):
// a sell-out from 3 pods with a buyer limit, the receiver answering 503
// for its first seconds, then stopped and restarted, one pod killed
// mid-run. The receiver ends with exactly one distinct webhook-id per
// order in PostgreSQL, each body equal to its order; duplicates are
// allowed and reported.
func TestDelivery_Storm_OutageReceiverRestartPodKilled_EveryOrderExactlyOnce(t *testing.T) {
	seats, outage := 2000, 3*time.Second
	if n, err := strconv.Atoi(os.Getenv("FLUX_ORDER_STORM_SEATS")); err == nil && n > 0 {
		seats, outage = n, 30*time.Second
	}
	port, err := testservers.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	h := newHookedSale(t, int64(seats), func(c *purchase.Config) { c.MaxPerBuyer = 3 })
	// newHookedSale's receiver listens on an httptest server; this test
	// moves it to a port it can restart.
	h.url = fmt.Sprintf("http://127.0.0.1:%d/hooks", port)
	h.writeWebhooks(t, "", secretOld)
	began := time.Now()
	h.recv.Answer = func(string, int) int {
		if time.Since(began) < outage {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	rr := &restartableReceiver{addr: fmt.Sprintf("127.0.0.1:%d", port), h: h.recv}
	rr.start(t)
	t.Cleanup(rr.stop)
	h.AddPod()
	h.AddPod()

	got := newTally()
	var sent atomic.Int64
	order := rand.Perm(seats * 3)
	done := make(chan struct{})
	go func() {
		defer close(done)
		storm(seats*3, 64, func(i int) {
			n := sent.Add(1)
			pod := i % 3
			if n > int64(seats) && pod == 2 {
				pod = i % 2 // pod 2 is dead from a third of the way on
			}
			got.add(h.BuyOn(pod, int64(order[i]%seats)+1, fmt.Sprintf("buyer-%d", rand.IntN(seats)), ""))
		})
	}()
	testservers.Eventually(t, 60*time.Second, 10*time.Millisecond, "a third of the storm", testservers.Holds(func() bool { return sent.Load() >= int64(seats) }))
	h.Pods[2].Stop()
	rr.stop() // the receiver goes away for a moment
	time.Sleep(500 * time.Millisecond)
	rr.start(t)
	<-done
	// Sell what the storm left: any seat, until sold out.
	for i := 0; ; i++ {
		a := h.Post(i%2, "/v1/purchase", fmt.Sprintf(`{"buyerId":"last-%d"}`, i), nil)
		got.add(a)
		if a.Code == "sold_out" || i > seats {
			break
		}
	}

	if got.count("403 buyer_limit_reached") == 0 {
		t.Fatalf("the storm must hit the buyer limit, got %v", got.byCode)
	}
	orders := h.orders(t)
	if len(orders) != seats {
		t.Fatalf("want a sell-out, %d orders of %d seats (%v)", len(orders), seats, got.byCode)
	}
	testservers.Eventually(t, 120*time.Second, 100*time.Millisecond, "one event per order", func() error {
		return h.checkEvents(orders)
	})
	st := h.recv.Stats()
	if st.BadSignatures != 0 || h.independent.Load() != 0 {
		t.Fatalf("bad signatures: %s, %d refused by the reference library", st, h.independent.Load())
	}
	t.Logf("%d orders (%v) in %s: the receiver has %s", len(orders), got.byCode, time.Since(began).Round(time.Second), st)
}

// A claim whose pod did not record it (killed mid-batch) is taken over
// when its lease ends: another fan-out reads the same events from the
// claim's start and delivers them again (duplicates, same webhook-ids),
// then records the claim. Here a dead pod's claim over the three orders
// already delivered is planted, its lease over.
func TestDelivery_ExpiredClaim_TakenOver_SameEventsSentAgain(t *testing.T) {
	h := newHookedSale(t, 10)
	ctx := context.Background()
	var xid, key string
	var src int
	var after *string
	if err := h.DB.QueryRow(ctx, `SELECT xid::text, src, key, after::text FROM webhook_cursor`).Scan(&xid, &src, &key, &after); err != nil {
		t.Fatal(err)
	}
	h.mustBuy(t, 1, 3)
	orders := h.orders(t)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the orders delivered", func() error { return h.checkEvents(orders) })
	// The claim covers every event since (sale.on_sale too, which this
	// webhook does not want): the three orders are sent again.
	var n, toSrc int
	var toXid, toKey string
	if err := h.DB.QueryRow(ctx, `SELECT count(*), max(e.xid)::text FROM webhook_events e WHERE ROW(e.xid, e.src, e.key COLLATE "C") > ROW($1::xid8, $2, $3)`,
		xid, src, key).Scan(&n, &toXid); err != nil || n < 3 {
		t.Fatalf("%d events since the cursor (%v)", n, err)
	}
	if err := h.DB.QueryRow(ctx, `SELECT src, key FROM webhook_events WHERE xid = $1::xid8 ORDER BY src DESC, key COLLATE "C" DESC LIMIT 1`,
		toXid).Scan(&toSrc, &toKey); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DB.Exec(ctx, `INSERT INTO webhook_claims (from_xid, from_src, from_key, to_xid, to_src, to_key, after, first_seq, n, leased_by, leased_until)
		VALUES ($1::xid8, $2, $3, $6::xid8, $7, $8, $4::pg_snapshot, 1000, $5, 'dead-pod', clock_timestamp() - interval '1 second')`,
		xid, src, key, after, n, toXid, toSrc, toKey); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the claim taken over and recorded", func() error {
		var claims, delivered int
		err := h.DB.QueryRow(ctx, `SELECT (SELECT count(*) FROM webhook_claims), (SELECT coalesce(sum(delivered), 0) FROM webhook_delivered)`).Scan(&claims, &delivered)
		if err == nil && (claims != 0 || delivered != 6 || h.recv.Stats().Duplicates != 3) {
			err = fmt.Errorf("%d claims left, %d delivered, %s", claims, delivered, h.recv.Stats())
		}
		return err
	})
	if err := h.checkEvents(orders); err != nil {
		t.Fatal(err)
	}
}

// A sale moment recorded by a pod of the version before the outbox's
// cursor (a webhook_sale_events row without data) is that pod's to send:
// the cursor does not send it.
func TestDelivery_SaleRowWithoutData_NotSentByTheCursor(t *testing.T) {
	h := newHookedSaleFrom(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed, salesv1alpha1.EventSaleEnded}, true, 5)
	if _, err := h.DB.Exec(context.Background(), `INSERT INTO webhook_sale_events (type) VALUES ('sale.ended')`); err != nil {
		t.Fatal(err)
	}
	h.mustBuy(t, 1, 1)
	orders := h.orders(t)
	// The row precedes the order: once the batch that sent the order has
	// recorded, anything the cursor would send of it has been sent.
	h.waitRecorded(t, 1)
	if err := h.checkEvents(orders); err != nil {
		t.Fatalf("only the order: %v", err)
	}
}

// waitRecorded waits until the fan-out has recorded at least delivered
// deliveries and holds no claim: every attempt of the batches that made
// them has ended.
func (h *hookedSale) waitRecorded(t *testing.T, delivered int) {
	t.Helper()
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the fan-out's batches recorded", func() error {
		var claims, done int
		err := h.DB.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM webhook_claims),
				(SELECT coalesce(sum(delivered), 0) FROM webhook_delivered)`).Scan(&claims, &done)
		if err == nil && (claims != 0 || done < delivered) {
			err = fmt.Errorf("%d claims in flight, %d delivered (want %d)", claims, done, delivered)
		}
		return err
	})
}

// An event of the outbox before the cursor still waiting in river_job
// once no pod of that version is left (its fan-out died mid-batch during
// the upgrade): the pods convert it into an event of the cursor and
// deliver it, after 30 s in river_job.
func TestDelivery_LegacyEventLeftInRiver_ConvertedAndDelivered(t *testing.T) {
	h := newHookedSale(t, 5)
	ctx := context.Background()
	var legacy string
	if err := h.DB.QueryRow(ctx, `WITH s AS (UPDATE tickets SET sold = true WHERE id = 3 RETURNING id)
		INSERT INTO orders (id, ticket_id, buyer_id, event_xid) SELECT gen_random_uuid(), id, 'legacy-buyer', NULL FROM s
		RETURNING id::text`).Scan(&legacy); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DB.Exec(ctx, `INSERT INTO river_job (kind, queue, args, max_attempts, state, scheduled_at, priority, created_at)
		VALUES ('flux_order_event', 'webhook_events', jsonb_build_object('id', $1::text, 'type', 'order.confirmed', 'seq', 1), 25, 'available',
			now() - interval '1 minute', 1, now() - interval '1 minute')`, legacy); err != nil {
		t.Fatal(err)
	}
	h.mustBuy(t, 1, 1)
	orders := h.orders(t)
	if _, ok := orders[legacy]; !ok || len(orders) != 2 {
		t.Fatalf("want the legacy order and one new: %v", orders)
	}
	testservers.Eventually(t, 15*time.Second, 50*time.Millisecond, "both delivered, the legacy one converted", func() error {
		return h.checkEvents(orders)
	})
	var left int
	if err := h.DB.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE kind = 'flux_order_event'`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d legacy rows left (%v)", left, err)
	}
}

// A taken-over claim is read between its start and its end, not for n
// events from its start: here a dead pod's claim ends at the first order
// (its count overstated), and only that order is sent again.
func TestDelivery_ExpiredClaim_ReadUpToItsEnd(t *testing.T) {
	h := newHookedSaleFrom(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}, true, 10)
	ctx := context.Background()
	h.mustBuy(t, 1, 3)
	orders := h.orders(t)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the orders delivered", func() error { return h.checkEvents(orders) })
	var toXid, toKey string
	if err := h.DB.QueryRow(ctx, `SELECT xid::text, key FROM webhook_events WHERE src = 1 ORDER BY xid, key COLLATE "C" LIMIT 1`).Scan(&toXid, &toKey); err != nil {
		t.Fatal(err)
	}
	if _, err := h.DB.Exec(ctx, `INSERT INTO webhook_claims (from_xid, from_src, from_key, to_xid, to_src, to_key, first_seq, n, leased_by, leased_until)
		VALUES ('0', 0, '', $1::xid8, 1, $2, 1000, 100, 'dead-pod', clock_timestamp() - interval '1 second')`, toXid, toKey); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the claim taken over", func() error {
		var claims int
		err := h.DB.QueryRow(ctx, `SELECT count(*) FROM webhook_claims`).Scan(&claims)
		if err == nil && claims != 0 {
			err = fmt.Errorf("%d claims left", claims)
		}
		return err
	})
	// The claim is recorded after its attempts ended: the count is final.
	if d := h.recv.Stats().Duplicates; d != 1 {
		t.Fatalf("want the one order up to the claim's end sent again, %d duplicates (%s)", d, h.recv.Stats())
	}
}
