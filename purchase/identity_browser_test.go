package purchase_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/purchase/buyerauth/buyerauthtest"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// The embedding site hands the page the buyer's identity token in the URL
// fragment: the page takes it out of the address bar, shows the token's
// subject as the buyer, joins the queue and buys with the token in
// Authorization and the pass in Flux-Order-Pass; the order is the
// subject's. A page handed no token is told to sign in.
func TestBrowser_Identity_TokenInTheFragment_JoinAndBuyAsTheSubject(t *testing.T) {
	tab := newTab(t, time.Minute)
	key := buyerauthtest.NewKey("k1")
	identity, _ := withIdentity(t, key)
	s := newQueueSale(t, 20, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 50}), identity)
	tok := key.Token(idIssuer, idAudience, "alice@example.com", time.Hour)
	url := s.Pods[0].URL + "/"

	run(t, tab, "open the page with the token in its fragment",
		chromedp.Navigate(url+"#access_token="+tok),
		chromedp.Poll[chromedp.Void](`document.body.dataset.live === "true"`, chromedp.WithPollingInterval(10*time.Millisecond)))
	if h := eval[string](t, tab, `location.href`); h != url {
		t.Fatalf("the address bar still shows %q, want the token taken out (%q)", h, url)
	}
	if b := eval[string](t, tab, `document.querySelector('[data-testid="buyer"]').value`); b != "alice@example.com" {
		t.Fatalf("buyer field %q, want the token's subject", b)
	}
	if !eval[bool](t, tab, `document.querySelector('[data-testid="buyer"]').readOnly`) {
		t.Fatal("the buyer field is editable with a token")
	}
	run(t, tab, "join, admitted, buy",
		chromedp.Click(chromedp.CSS(`[data-action="join"]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById('queue').hidden`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second)),
		waitSeatState(5, "available", 2*time.Second),
		clickSeat(5),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)))
	var buyer string
	if err := s.DB.QueryRow(context.Background(), `SELECT buyer_id FROM orders WHERE ticket_id = 5`).Scan(&buyer); err != nil || buyer != "alice@example.com" {
		t.Fatalf("seat 5's order: buyer %q (%v), want the token's subject", buyer, err)
	}
	// A reload keeps the token for the tab (the fragment is gone).
	run(t, tab, "reload", chromedp.Reload(),
		chromedp.Poll[chromedp.Void](`document.body.dataset.live === "true"`, chromedp.WithPollingInterval(10*time.Millisecond)))
	if b := eval[string](t, tab, `document.querySelector('[data-testid="buyer"]').value`); b != "alice@example.com" {
		t.Fatalf("after a reload the buyer is %q", b)
	}

	other := newTab(t, time.Minute)
	openSalePage(t, other, url, "mallory")
	run(t, other, "no token: sign in first", chromedp.Click(chromedp.CSS(`[data-action="join"]`)), waitProblem("auth_required"))
}
