package purchase_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/purchase/checkout"
)

// With holds on, a click holds the seat and opens the checkout: confirm
// makes the order, release frees the seat at once, and an expiring hold
// returns the seat on both pages (the holder's and another buyer's).
func TestBrowser_Holds_ConfirmRelease_AndAnExpiringHoldReturnsTheSeatOnBothPages(t *testing.T) {
	const ttl = 2 * time.Second
	s := newTestSale(t, 30, withHolds(ttl))
	url := s.Pods[0].URL + "/"
	alice, bob := newTab(t, time.Minute), newTab(t, time.Minute)
	openSalePage(t, alice, url, "alice")
	openSalePage(t, bob, url, "bob")
	checkoutOpen := chromedp.WaitVisible(chromedp.CSS(`#checkout [data-action="confirm"]`))
	closed := chromedp.Poll[chromedp.Void](`document.getElementById('checkout').hidden`,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(5*time.Second))

	// Hold and confirm.
	run(t, alice, "hold seat 5", chromedp.WaitVisible(chromedp.CSS(`[data-action="hold"]`)), clickSeat(5), checkoutOpen)
	run(t, bob, "bob sees seat 5 held", waitSeatState(5, "held", time.Second))
	run(t, bob, "bob clicks the held seat", clickSeat(5), waitProblem("ticket_held"))
	run(t, alice, "confirm", chromedp.Click(chromedp.CSS(`#checkout [data-action="confirm"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)), closed)
	id := value(t, alice, "order id", chromedp.AttributeValue(chromedp.CSS(`[data-testid="order"]`), "data-order-id")).Value
	var o checkout.Order
	if code := s.GetJSON("/v1/orders/"+id, &o); code != http.StatusOK || o.TicketID != 5 || o.BuyerID != "alice" {
		t.Fatalf("order %q: %d %+v", id, code, o)
	}
	run(t, bob, "bob sees seat 5 sold", waitSeatState(5, "sold", time.Second))

	// Hold and release.
	run(t, alice, "hold seat 6", clickSeat(6), checkoutOpen)
	run(t, bob, "bob sees seat 6 held", waitSeatState(6, "held", time.Second))
	run(t, alice, "release", chromedp.Click(chromedp.CSS(`#checkout [data-action="release"]`)), closed)
	run(t, bob, "bob sees seat 6 available again", waitSeatState(6, "available", time.Second))

	// Hold and let it expire: the checkout closes with hold_expired, and
	// the seat is available on both pages within a second of the expiry.
	run(t, alice, "hold seat 7", clickSeat(7), checkoutOpen)
	held := time.Now()
	run(t, bob, "bob sees seat 7 held", waitSeatState(7, "held", time.Second))
	left := eval[string](t, alice, `document.querySelector('[data-testid="hold-countdown"]').textContent`)
	t.Logf("checkout countdown: %s", left)
	run(t, alice, "the hold expires", waitProblem("hold_expired"), closed)
	run(t, alice, "alice sees seat 7 available", waitSeatState(7, "available", time.Second))
	run(t, bob, "bob sees seat 7 available", waitSeatState(7, "available", time.Second))
	if d := time.Since(held); d > ttl+2*time.Second {
		t.Fatalf("seat 7 came back %v after the hold (ttl %v)", d, ttl)
	}
	if st := s.dbSeats()["7"]; st != "available" {
		t.Fatalf("Postgres says seat 7 is %s", st)
	}
}
