package purchase_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

// outboxOn is the switch as the sale's database holds it.
func outboxOn(t *testing.T, h *hookedSale) bool {
	t.Helper()
	var on bool
	if err := h.DB.QueryRow(context.Background(), `SELECT outbox_on()`).Scan(&on); err != nil {
		t.Fatal(err)
	}
	return on
}

// A sale with no webhook (docs/delivery.md, "Events are delivered while
// the sale has a webhook"): its pods turn the switch off at start, a storm
// from two pods writes no river_job row at all and nothing is sent. A
// webhook added mid-sale turns it on: once the pods read it, every order
// after it is delivered exactly once, and the orders before it (and
// sale.on_sale, which happened before it) are not.
func TestDelivery_NoWebhook_StormWritesNoEvents_AWebhookAddedGetsTheOrdersAfterIt(t *testing.T) {
	const seats = 400
	h := newHookedSaleFrom(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed, salesv1alpha1.EventSaleOnSale},
		false, seats, func(c *purchase.Config) { c.MaxPerBuyer = 2 })
	h.AddPod()
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the switch off on both pods", testservers.Holds(func() bool {
		return !outboxOn(t, h) && !h.Pods[0].Svc.Delivery.OutboxOn() && !h.Pods[1].Svc.Delivery.OutboxOn()
	}))

	// Seats 1..200, contested, some buyers over the limit.
	got := newTally()
	storm(600, 64, func(i int) {
		got.add(h.BuyOn(i%2, int64(rand.IntN(seats/2))+1, fmt.Sprintf("buyer-%d", rand.IntN(150)), ""))
	})
	before := h.orders(t)
	if len(before) == 0 || len(before) != got.count("201") {
		t.Fatalf("%d orders, %d answered 201 (%v)", len(before), got.count("201"), got.byCode)
	}
	var rows int
	if err := h.DB.QueryRow(context.Background(), `SELECT count(*) FROM river_job`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("no webhook: want no river_job row, got %d (%v)", rows, err)
	}
	var moments int
	if err := h.DB.QueryRow(context.Background(), `SELECT count(*) FROM webhook_sale_events WHERE type = 'sale.on_sale'`).Scan(&moments); err != nil || moments != 1 {
		t.Fatalf("sale.on_sale must be recorded as a moment that passed: %d (%v)", moments, err)
	}

	h.writeWebhooks(t, "", secretOld)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "both pods read the webhook, the switch on", testservers.Holds(func() bool {
		return outboxOn(t, h) && h.Pods[0].Svc.Delivery.Webhooks() == 1 && h.Pods[1].Svc.Delivery.Webhooks() == 1
	}))
	storm(seats/2, 32, func(i int) {
		seat := int64(seats/2 + 1 + i)
		if a := h.BuyOn(i%2, seat, fmt.Sprintf("later-%d", i), ""); a.Status != http.StatusCreated {
			t.Errorf("buy seat %d: %d %s", seat, a.Status, a.Code)
		}
	})
	after := map[string]orderstore.Order{}
	for id, o := range h.orders(t) {
		if _, old := before[id]; !old {
			after[id] = o
		}
	}
	if len(after) != seats/2 {
		t.Fatalf("%d orders after the webhook, want %d", len(after), seats/2)
	}
	// checkEvents: exactly one event per order after the webhook and no
	// other (none of the orders before it, no sale.on_sale).
	testservers.Eventually(t, 30*time.Second, 50*time.Millisecond, "the orders after the webhook delivered, once each", func() error {
		return h.checkEvents(after)
	})
	// The count is written by the fan-out after the receiver's 2xx (in
	// its own transaction), so it may trail the deliveries a moment.
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "one delivery counted per order after the webhook", func() error {
		if err := h.DB.QueryRow(context.Background(), `SELECT coalesce(sum(delivered), 0) FROM webhook_delivered`).Scan(&rows); err != nil {
			return err
		}
		if rows != len(after) {
			return fmt.Errorf("%d counted, want %d", rows, len(after))
		}
		return nil
	})
	if st := h.recv.Stats(); st.BadSignatures != 0 || h.independent.Load() != 0 {
		t.Fatalf("every delivery must verify: %s, %d refused by the reference library", st, h.independent.Load())
	}
}

// Two pods that disagree while the file propagates, one listing a webhook
// and one listing none: the switch stays ON however long it lasts (the
// pod with none may turn it off only when no pod has seen a webhook for
// OutboxOffAfter). Once neither lists one, it goes off, not before that
// delay; a webhook listed again turns it on at once.
func TestOutboxSwitch_TwoPodsDisagree_EndsOn_OffOnlyAfterTheDelay(t *testing.T) {
	const offAfter = 2 * time.Second
	h := newHookedSale(t, 5, func(c *purchase.Config) { c.Delivery.OutboxOffAfter = offAfter })
	none := filepath.Join(t.TempDir(), "webhooks.json")
	if err := os.WriteFile(none, []byte(`{"webhooks":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Pod a sets the switch from its deliverer, which starts after its
	// /healthz answers; before its first stamp the switch is the
	// migration's (on, never stamped), which pod b would rightly turn off
	// (seen once in CI, with the packages' tests loading both cores).
	testservers.Eventually(t, 10*time.Second, 10*time.Millisecond, "pod a's first stamp", testservers.Holds(func() bool {
		var stamped bool
		if err := h.DB.QueryRow(context.Background(), `SELECT webhook_seen_at IS NOT NULL FROM outbox_switch`).Scan(&stamped); err != nil {
			t.Fatal(err)
		}
		return stamped
	}))
	b := h.Run(func(c *purchase.Config) { c.PodName = "pod-b"; c.Delivery.File = none }, nil)
	if b.Svc.Delivery.Webhooks() != 0 || h.Pods[0].Svc.Delivery.Webhooks() != 1 {
		t.Fatal("pod b must list no webhook and pod a one")
	}
	// Longer than the delay, sampled often: never off.
	for end := time.Now().Add(offAfter + time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !outboxOn(t, h) {
			t.Fatal("the switch went off while pod a lists a webhook")
		}
	}
	if !b.Svc.Delivery.OutboxOn() {
		t.Fatal("pod b must read the switch on")
	}
	h.mustBuy(t, 1, 1)
	orders := h.orders(t)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the order delivered", func() error { return h.checkEvents(orders) })

	// Pod a's file now lists none too.
	h.writeWebhooksNone(t)
	removed := time.Now()
	testservers.Eventually(t, offAfter+10*time.Second, 10*time.Millisecond, "the switch off", testservers.Holds(func() bool {
		return !outboxOn(t, h)
	}))
	// Pod a stamped at most one follow tick (20 ms) before it read the
	// new file; the switch goes off offAfter after that stamp.
	if took := time.Since(removed); took < offAfter-100*time.Millisecond {
		t.Fatalf("the switch went off %s after the last webhook went, before the %s delay", took, offAfter)
	}
	h.mustBuy(t, 2, 2)
	h.writeWebhooks(t, "", secretOld)
	testservers.Eventually(t, time.Second, 5*time.Millisecond, "the switch on at once", testservers.Holds(func() bool {
		return outboxOn(t, h)
	}))
	// The order bought while the switch was off is never sent; the next is.
	testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, "both pods read the switch on", testservers.Holds(func() bool {
		return h.Pods[0].Svc.Delivery.OutboxOn() && b.Svc.Delivery.OutboxOn()
	}))
	h.mustBuy(t, 3, 3)
	want := map[string]orderstore.Order{}
	for id, o := range h.orders(t) {
		if o.TicketID != 2 {
			want[id] = o
		}
	}
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "orders 1 and 3 delivered, not 2", func() error { return h.checkEvents(want) })
}

// The switch's OFF → ON is exact without any lock: an event belongs to the
// webhook iff its transaction had not committed when the switch went on.
// Seat 3 is bought (committed) with the switch off; a transaction confirms
// seat 1 and stays open while a webhook is added, and the switch goes on at
// once under it; then it commits, and seat 2 is bought. Seats 1 and 2 are
// delivered, seat 3 never.
func TestOutboxSwitch_OnIsExact_AnOrderCommittingAfterItIsSent_OneBeforeIsNot(t *testing.T) {
	h := newHookedSaleFrom(t, []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}, false, 10)
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the switch off", testservers.Holds(func() bool {
		return !outboxOn(t, h) && !h.Pods[0].Svc.Delivery.OutboxOn()
	}))
	ctx := context.Background()
	if a := h.BuyOn(0, 3, "before", ""); a.Status != http.StatusCreated {
		t.Fatalf("buy seat 3: %d %s", a.Status, a.Code)
	}
	tx, err := h.DB.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT * FROM confirm_purchase(1, gen_random_uuid(), 'slow-commit', NULL, 0)`); err != nil {
		t.Fatal(err)
	}
	h.writeWebhooks(t, "", secretOld)
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the switch on while the order is not committed", testservers.Holds(func() bool {
		return outboxOn(t, h) && h.Pods[0].Svc.Delivery.OutboxOn()
	}))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if a := h.BuyOn(0, 2, "after", ""); a.Status != http.StatusCreated {
		t.Fatalf("buy seat 2: %d %s", a.Status, a.Code)
	}
	want := map[string]orderstore.Order{}
	for id, o := range h.orders(t) {
		if o.TicketID != 3 {
			want[id] = o
		}
	}
	if len(want) != 2 {
		t.Fatalf("want the orders of seats 1 and 2, got %v", want)
	}
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "seats 1 and 2 delivered, seat 3 not", func() error { return h.checkEvents(want) })
	// And nothing more arrives once the batches that sent them recorded.
	h.waitRecorded(t, len(want))
	if err := h.checkEvents(want); err != nil {
		t.Fatal(err)
	}
}
