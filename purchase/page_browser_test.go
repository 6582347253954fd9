package purchase_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// A buyer clicks a seat (holds off: the click buys) and sees the order; a
// second browser sees the seat turn sold within 1 s; its buyer clicks the
// sold seat and sees the sold message.
func TestBrowser_BuyerBuys_SecondBrowserSeesSoldWithin1s_AndGetsTheSoldMessage(t *testing.T) {
	s := newTestSale(t, 60, func(c *purchase.Config) { c.DisplayName = "Browser test" })
	url := s.Pods[0].URL + "/"
	alice, bob := newTab(t, time.Minute), newTab(t, time.Minute)
	openSalePage(t, alice, url, "alice")
	openSalePage(t, bob, url, "bob")
	run(t, bob, "seat 7 available for bob", waitSeatState(7, "available", time.Second))
	// Issue 17: Chromium's EventSource accepts gzip, so both pages' streams
	// are compressed (and the page reads them).
	if n := purchasetest.Counter(t, s.Pods[0].Svc, "flux_order_seat_streams_opened_total", "encoding", "gzip"); n < 2 {
		t.Fatalf("%v gzip streams opened, want both pages'", n)
	}

	run(t, alice, "alice buys seat 7",
		chromedp.WaitVisible(chromedp.CSS(`[data-action="buy"]`)),
		clickSeat(7),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)))
	orderID := value(t, alice, "the order id", chromedp.AttributeValue(chromedp.CSS(`[data-testid="order"]`), "data-order-id")).Value
	shown := time.Now()
	var o checkout.Order
	if code := s.GetJSON("/v1/orders/"+orderID, &o); code != http.StatusOK || o.TicketID != 7 || o.BuyerID != "alice" {
		t.Fatalf("the page's order %q: GET /v1/orders answered %d %+v", orderID, code, o)
	}
	run(t, bob, "bob sees seat 7 sold within 1 s", waitSeatState(7, "sold", time.Second))
	t.Logf("the second browser showed seat 7 sold %v after the first showed the order", time.Since(shown))
	if sold := eval[string](t, bob, `document.querySelector('[data-testid="sold"]').textContent`); sold != "1" {
		t.Fatalf("bob's sold counter: %q, want 1", sold)
	}

	run(t, bob, "bob clicks the sold seat", clickSeat(7), waitProblem("ticket_sold"))
	t.Logf("bob reads: %s", eval[string](t, bob, `document.querySelector('[data-testid="problem"]').textContent`))
	if a := s.Audit(); a.Orders != 1 {
		t.Fatalf("%d orders, want alice's only", a.Orders)
	}
}

// 100,000 seats: the page renders only the seats in view (a few hundred
// DOM nodes), scrolls to the last seat, and moves by keyboard.
func TestBrowser_100000Seats_VirtualizedGrid_KeyboardAndPhone(t *testing.T) {
	const n = 100_000
	s := newTestSale(t, n)
	if a := s.Buy(n-1, "early"); a.Status != http.StatusCreated {
		t.Fatalf("buy: %d %s", a.Status, a.Code)
	}
	tab := newTab(t, time.Minute)
	start := time.Now()
	openSalePage(t, tab, s.Pods[0].URL+"/", "kim")
	t.Logf("100,000 seats live in %v", time.Since(start))
	// The longest main-thread task so far (loading, decoding the snapshot,
	// the first render): a frozen page would show one of seconds.
	longest, err := chromedp.Run(tab, chromedp.Evaluate[float64](`new Promise((done) => {
		const seen = [0];
		const po = new PerformanceObserver((l) => { for (const e of l.getEntries()) seen.push(e.duration); });
		po.observe({type: 'longtask', buffered: true});
		setTimeout(() => { po.disconnect(); done(Math.max(...seen)); }, 200);
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("longest main-thread task while loading: %.0f ms", longest)
	if longest > 2000 {
		t.Fatalf("the page blocked its main thread for %.0f ms loading 100,000 seats", longest)
	}

	rendered := eval[int](t, tab, `document.querySelectorAll('[data-seat]').length`)
	total := eval[int](t, tab, `document.querySelectorAll('*').length`)
	t.Logf("seat nodes rendered: %d (of %d seats), DOM elements in all: %d", rendered, n, total)
	if rendered < 50 || rendered > 2000 {
		t.Fatalf("%d seat nodes rendered, want only those in view (50..2000)", rendered)
	}

	// Scroll to the end: the last seats are rendered with their states.
	run(t, tab, "scroll to the end",
		scrollGrid("g.scrollHeight"),
		waitSeatState(n, "available", 2*time.Second),
		waitSeatState(n-1, "sold", time.Second))
	if last := eval[int](t, tab, `document.querySelectorAll('[data-seat]').length`); last > 2000 {
		t.Fatalf("%d seat nodes after scrolling: nodes are not recycled", last)
	}

	// Keyboard: focus seat 1, move right, End jumps to the last seat.
	run(t, tab, "keyboard",
		scrollGrid("0"),
		waitSeatState(1, "available", 2*time.Second),
		chromedp.Focus(chromedp.CSS(`[data-seat="1"]`)),
		chromedp.KeyEvent(kb.ArrowRight))
	if focused := eval[string](t, tab, `document.activeElement.dataset.seat`); focused != "2" {
		t.Fatalf("after ArrowRight from seat 1 the focus is on seat %q", focused)
	}
	run(t, tab, "End key", chromedp.KeyEvent(kb.End))
	if focused := eval[string](t, tab, `document.activeElement.dataset.seat`); focused != fmt.Sprint(n) {
		t.Fatalf("after End the focus is on seat %q", focused)
	}

	// Phone-sized: no sideways scrolling, seats still laid out.
	run(t, tab, "phone-sized",
		chromedp.EmulateViewport(375, 740, chromedp.EmulateScale(2)),
		scrollGrid("0"),
		waitSeatState(1, "available", 2*time.Second))
	overflow := eval[bool](t, tab, `document.documentElement.scrollWidth > window.innerWidth`)
	rendered = eval[int](t, tab, `document.querySelectorAll('[data-seat]').length`)
	if overflow || rendered < 10 {
		t.Fatalf("on a phone-sized screen: horizontal overflow %v, %d seats rendered", overflow, rendered)
	}
}

// scrollGrid sets the seat map's scrollTop to a JavaScript expression of g,
// the grid.
func scrollGrid(to string) chromedp.Action[chromedp.Void] {
	return chromedp.Evaluate[chromedp.Void](`(() => { const g = document.getElementById('grid'); g.scrollTop = ` + to + `; })()`)
}
