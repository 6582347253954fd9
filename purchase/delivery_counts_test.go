package purchase_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/delivery"
)

// twoHooks is a sale whose pods deliver to two webhooks, each with its
// own receiver: "sales" wants the sale's own events, "orders" the orders.
type twoHooks struct {
	*testSale
	recv map[string]*delivery.Receiver
	// gate holds each receiver's answers until it is closed.
	gate map[string]chan struct{}
}

var twoHooksEvents = map[string][]salesv1alpha1.WebhookEvent{
	"sales":  {salesv1alpha1.EventSaleOnSale, salesv1alpha1.EventSaleSoldOut, salesv1alpha1.EventSaleEnded},
	"orders": {salesv1alpha1.EventOrderConfirmed},
}

// newTwoHooks starts the sale; gated receivers answer only once their gate
// is opened (openGate), so the batches that deliver to them keep their
// claims open meanwhile.
func newTwoHooks(t *testing.T, tickets int64, gated bool, opts ...func(*purchase.Config)) *twoHooks {
	t.Helper()
	h := &twoHooks{recv: map[string]*delivery.Receiver{}, gate: map[string]chan struct{}{}}
	var f salesv1alpha1.WebhooksFile
	for name, events := range twoHooksEvents {
		recv, gate := delivery.NewReceiver(secretOld), make(chan struct{})
		if !gated {
			close(gate)
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
			recv.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		h.recv[name], h.gate[name] = recv, gate
		f.Webhooks = append(f.Webhooks, salesv1alpha1.ResolvedWebhook{Name: name, URL: srv.URL + "/" + name,
			SigningSecrets: []string{secretOld}, InsecureHTTP: true, Events: events})
	}
	raw, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "webhooks.json")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	opts = append([]func(*purchase.Config){func(c *purchase.Config) {
		c.Delivery = delivery.Config{
			File: file, Schedule: delivery.DefaultSchedule(time.Millisecond),
			PollInterval: 20 * time.Millisecond, FollowInterval: 20 * time.Millisecond,
			// A held attempt must not time out (it would go to River).
			AttemptTimeout: 30 * time.Second,
		}
	}}, opts...)
	h.testSale = newTestSale(t, tickets, opts...)
	// First of the cleanups: the pods' batches end (their stop waits for
	// them) and no handler is left waiting when the servers close.
	t.Cleanup(func() {
		for name := range h.gate {
			h.openGate(name)
		}
	})
	return h
}

var gateMu sync.Mutex

func (h *twoHooks) openGate(name string) {
	gateMu.Lock()
	defer gateMu.Unlock()
	select {
	case <-h.gate[name]:
	default:
		close(h.gate[name])
	}
}

// wanted are the events each webhook wants that exist now.
func (h *twoHooks) wanted() (map[string]int64, error) {
	var orders, sales int64
	err := h.DB.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE type = 'order.confirmed'),
			count(*) FILTER (WHERE type IN ('sale.on_sale', 'sale.sold_out', 'sale.ended')) FROM webhook_events`).Scan(&orders, &sales)
	return map[string]int64{"orders": orders, "sales": sales}, err
}

// counts are pod's Counts by webhook.
func (h *twoHooks) counts(pod int) (map[string]delivery.WebhookCounts, error) {
	cs, err := h.Pods[pod].Svc.Delivery.Counts(context.Background())
	if err != nil {
		return nil, err
	}
	out := map[string]delivery.WebhookCounts{}
	for _, c := range cs {
		out[c.Name] = c
	}
	if len(out) != 2 {
		return nil, fmt.Errorf("want the two webhooks' counts, got %+v", cs)
	}
	return out, nil
}

// Batches whose attempts are held (the receivers do not answer yet) keep
// their claims open: sale.on_sale in one, the orders in others. Each
// webhook's pending is exactly its own events, claimed or not (a claim's
// events used to be pending for every webhook), and its oldest pending is
// its oldest claimed event's time.
func TestDelivery_Counts_OpenClaims_EachWebhookPendingItsOwnEvents(t *testing.T) {
	h := newTwoHooks(t, 5, true)
	ctx := context.Background()
	waitClaimed := func(what string, want int) {
		t.Helper()
		testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, what, func() error {
			var claimed int
			err := h.DB.QueryRow(ctx, `SELECT coalesce(sum(n), 0) FROM webhook_claims`).Scan(&claimed)
			if err == nil && claimed != want {
				err = fmt.Errorf("%d events claimed", claimed)
			}
			return err
		})
	}
	waitClaimed("sale.on_sale claimed", 1)
	for seat := int64(1); seat <= 3; seat++ {
		if a := h.Buy(seat, fmt.Sprintf("b%d", seat)); a.Status != http.StatusCreated {
			t.Fatalf("buy seat %d: %d %s", seat, a.Status, a.Code)
		}
	}
	waitClaimed("the orders claimed too", 4)
	var onSaleAt, firstOrderAt time.Time
	if err := h.DB.QueryRow(ctx, `SELECT (SELECT at FROM webhook_events WHERE type = 'sale.on_sale'),
			(SELECT min(purchased_at) FROM orders)`).Scan(&onSaleAt, &firstOrderAt); err != nil {
		t.Fatal(err)
	}
	cs, err := h.counts(0)
	if err != nil {
		t.Fatal(err)
	}
	if s, o := cs["sales"], cs["orders"]; s.Pending != 1 || s.Delivered != 0 || o.Pending != 3 || o.Delivered != 0 {
		t.Fatalf("want sales 1 pending and orders 3 (each its own claimed events), got %+v", cs)
	}
	if s, o := cs["sales"], cs["orders"]; !s.OldestPending.Equal(onSaleAt) || !o.OldestPending.Equal(firstOrderAt) {
		t.Fatalf("oldest pending: sales %s (want sale.on_sale's %s), orders %s (want the first order's %s)",
			s.OldestPending, onSaleAt, o.OldestPending, firstOrderAt)
	}

	h.openGate("sales")
	h.openGate("orders")
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "all delivered", func() error {
		cs, err := h.counts(0)
		if err == nil && (cs["sales"].Pending != 0 || cs["sales"].Delivered != 1 || cs["orders"].Pending != 0 || cs["orders"].Delivered != 3 ||
			!cs["orders"].OldestPending.IsZero()) {
			err = fmt.Errorf("counts %+v", cs)
		}
		return err
	})
}

// While a sell-out from two pods is being delivered, every count of every
// pod is a state that existed: pending + delivered + dead never exceeds
// the events the webhook wants (read after the count, so never fewer than
// at its snapshot), and equals them once the deliveries are done.
func TestDelivery_Counts_DuringASellOut_NeverAboveTheEvents(t *testing.T) {
	const seats = 600
	h := newTwoHooks(t, seats, false)
	h.AddPod()
	var samples, claimedSeen atomic.Int64
	var mu sync.Mutex
	var over []string
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	for pod := range 2 {
		sampling.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cs, err := h.counts(pod)
				var want map[string]int64
				if err == nil {
					want, err = h.wanted()
				}
				if err != nil {
					mu.Lock()
					over = append(over, err.Error())
					mu.Unlock()
					return
				}
				samples.Add(1)
				if cs["orders"].Pending > 0 {
					claimedSeen.Add(1)
				}
				for name, c := range cs {
					if got := c.Pending + c.Delivered + c.Dead; got > want[name] {
						mu.Lock()
						over = append(over, fmt.Sprintf("pod %d, %s: %d pending + %d delivered + %d dead > %d events", pod, name, c.Pending, c.Delivered, c.Dead, want[name]))
						mu.Unlock()
					}
				}
			}
		})
	}
	got := newTally()
	storm(seats+200, 32, func(i int) {
		got.add(h.Post(i%2, "/v1/purchase", fmt.Sprintf(`{"buyerId":"buyer-%d"}`, i), nil))
	})
	testservers.Eventually(t, 30*time.Second, 20*time.Millisecond, "every event delivered", func() error {
		want, err := h.wanted()
		if err != nil {
			return err
		}
		cs, err := h.counts(1)
		if err == nil && (want["orders"] != seats || want["sales"] != 2 || cs["orders"].Pending != 0 || cs["sales"].Pending != 0) {
			err = fmt.Errorf("events %v, counts %+v", want, cs)
		}
		return err
	})
	close(stop)
	sampling.Wait()
	if len(over) > 0 {
		t.Fatalf("%d of %d counts exceed the events (%d seen with orders pending): %v", len(over), samples.Load(), claimedSeen.Load(), over[:min(5, len(over))])
	}
	want, err := h.wanted()
	if err != nil {
		t.Fatal(err)
	}
	for pod := range 2 {
		cs, err := h.counts(pod)
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range cs {
			if c.Pending+c.Delivered+c.Dead != want[name] || c.Delivered != want[name] {
				t.Errorf("pod %d, %s: %+v, want %d delivered", pod, name, c, want[name])
			}
		}
	}
	if n := int64(len(h.recv["orders"].Events())); n != seats {
		t.Errorf("the orders' receiver has %d events, want %d", n, seats)
	}
	t.Logf("%d counts during the sell-out (%d with orders pending), %v", samples.Load(), claimedSeen.Load(), got.byCode)
}
