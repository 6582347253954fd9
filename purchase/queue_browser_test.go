package purchase_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// The queue flow in the page: before the start the buyer sees the
// countdown and joins the waiting room behind others, sees a live
// position, is handed over to the seat map when admitted (at the start),
// and buys with the pass. A buyer who never queued gets pass_required.
func TestBrowser_QueueFlow_JoinThenAdmissionThenPurchase(t *testing.T) {
	tab := newTab(t, time.Minute) // first: a tab takes a while on a busy machine
	starts := time.Now().Add(6 * time.Second)
	s := newQueueSale(t, 20, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 2}), func(c *purchase.Config) {
		c.Schedule.StartsAt = starts
		c.DisplayName = "Queue test"
	})
	var facts httpapi.SaleBody
	if s.GetJSON("/v1/sale", &facts); !facts.WaitingRoom.Enabled || facts.WaitingRoom.JoinFrom != nil {
		t.Fatalf("GET /v1/sale: waitingRoom %+v, want enabled without joinFrom", facts.WaitingRoom)
	}
	url := s.Pods[0].URL + "/"
	openSalePage(t, tab, url, "quinn")
	run(t, tab, "before the start: countdown and join button",
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="countdown"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-action="join"]`)))
	if eval[bool](t, tab, `!!document.querySelector('[data-seat]') && !document.getElementById('seats').hidden`) {
		t.Fatal("the seat map is shown before the start")
	}
	for i := range 3 { // three buyers ahead
		if a := s.join(0, fmt.Sprintf("ahead-%d", i)); a.Status != http.StatusAccepted {
			t.Fatalf("join: %d %s", a.Status, a.Code)
		}
	}
	run(t, tab, "join", chromedp.Click(chromedp.CSS(`[data-action="join"]`)),
		chromedp.Poll[chromedp.Void](`/^[0-9]+$/.test(document.querySelector('[data-testid="queue-position"]').textContent)`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(5*time.Second)))
	pos, err := strconv.Atoi(eval[string](t, tab, `document.querySelector('[data-testid="queue-position"]').textContent`))
	if err != nil || pos < 4 {
		t.Fatalf("position %d (%v), want behind the 3 buyers ahead", pos, err)
	}
	wait := eval[string](t, tab, `document.querySelector('[data-testid="queue-wait"]').textContent`)
	t.Logf("in the queue at position %d, estimated wait %s", pos, wait)

	// Admission hands the buyer over to the seat map.
	run(t, tab, "admitted: the queue gives way to the seat map",
		chromedp.Poll[chromedp.Void](`document.getElementById('queue').hidden && !document.getElementById('notice').hidden`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)),
		waitSeatState(5, "available", 2*time.Second))
	if time.Now().Before(starts) {
		t.Fatal("admitted before the start")
	}
	run(t, tab, "buy with the pass", clickSeat(5), chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)))
	var o checkout.Order
	id := value(t, tab, "order id", chromedp.AttributeValue(chromedp.CSS(`[data-testid="order"]`), "data-order-id")).Value
	if code := s.GetJSON("/v1/orders/"+id, &o); code != http.StatusOK || o.BuyerID != "quinn" || o.TicketID != 5 {
		t.Fatalf("order %q: %d %+v", id, code, o)
	}

	// A second browser that never queued is told to join first.
	other := newTab(t, time.Minute)
	openSalePage(t, other, url, "skipper")
	run(t, other, "no pass", waitSeatState(6, "available", 2*time.Second), clickSeat(6), waitProblem("pass_required"))
}
