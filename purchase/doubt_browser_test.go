package purchase_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/purchase/checkout"
)

// doubtProxy stands between the page and its pod, as an Ingress does, and
// makes the first answer to one kind of request go wrong after the pod
// gave it: the request has done its work, the buyer does not know.
type doubtProxy struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD path Idempotency-Key" of every API call
}

// newDoubtProxy serves pod through a proxy; the first n requests matching
// spoil go to the pod, and then spoilt answers them instead.
func newDoubtProxy(t *testing.T, pod string, spoil *regexp.Regexp, n int, spoilt func(w http.ResponseWriter, answer *http.Response, body []byte)) *doubtProxy {
	target, err := url.Parse(pod)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &doubtProxy{}
	var spoiled atomic.Int64
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1/events" {
			p.mu.Lock()
			p.seen = append(p.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Idempotency-Key"))
			p.mu.Unlock()
		}
		if !spoil.MatchString(r.Method+" "+r.URL.Path) || spoiled.Add(1) > int64(n) {
			rp.ServeHTTP(w, r)
			return
		}
		out, _ := http.NewRequestWithContext(context.WithoutCancel(r.Context()), r.Method, pod+r.URL.Path, r.Body)
		out.Header = r.Header.Clone()
		answer, err := http.DefaultClient.Do(out)
		if err != nil {
			t.Errorf("proxy: %v", err)
			return
		}
		body, _ := io.ReadAll(answer.Body)
		answer.Body.Close()
		spoilt(w, answer, body)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *doubtProxy) calls(prefix string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.seen {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

// aliceThroughProxy opens alice's sale page through a doubtProxy of the
// sale's pod that spoils the first n answers to the calls matching spoil.
func aliceThroughProxy(t *testing.T, s *testSale, spoil string, n int, spoilt func(http.ResponseWriter, *http.Response, []byte)) (*doubtProxy, context.Context) {
	proxy := newDoubtProxy(t, s.Pods[0].URL, regexp.MustCompile(spoil), n, spoilt)
	alice := newTab(t, 20*time.Second)
	openSalePage(t, alice, proxy.URL+"/", "alice")
	return proxy, alice
}

// retriedWithOneKey fails the test unless the calls starting with prefix
// (a method and path) came again after the two dropped answers, all with
// one Idempotency-Key.
func (p *doubtProxy) retriedWithOneKey(t *testing.T, prefix string) {
	t.Helper()
	calls := p.calls(prefix)
	t.Logf("%q", calls)
	if len(calls) < 3 {
		t.Fatalf("the page did not retry: %q", calls)
	}
	for _, c := range calls {
		if c == prefix || c != calls[0] {
			t.Fatalf("want one Idempotency-Key on every attempt, got %q", calls)
		}
	}
}

// dropConnection answers nothing: the connection closes as the pod's
// answer would have come, and the browser sees a network error. (Chromium
// itself resends a request once when a reused connection closes without an
// answer: a test drops two answers to get one error to the page.)
func dropConnection(w http.ResponseWriter, _ *http.Response, _ []byte) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		c.Close()
	}
}

// Issue 17, defect 5: the answer to a purchase is lost after the order
// committed. The page retries with the same Idempotency-Key, gets the order
// back (replayed), and shows the seat as the buyer's, also after a reload;
// one order in Postgres.
func TestBrowser_PurchaseAnswerLost_PageRetriesWithTheSameKey_SeatShownAsTheBuyers(t *testing.T) {
	s := newTestSale(t, 12)
	proxy, alice := aliceThroughProxy(t, s, `^POST /v1/tickets/\d+/purchase$`, 2, dropConnection)
	run(t, alice, "alice buys seat 4 and her answer is lost",
		chromedp.WaitVisible(chromedp.CSS(`[data-action="buy"]`)),
		clickSeat(4),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)),
		waitSeatState(4, "sold", 2*time.Second))
	shownID := value(t, alice, "order id", chromedp.AttributeValue(chromedp.CSS(`[data-testid="order"]`), "data-order-id")).Value

	proxy.retriedWithOneKey(t, "POST /v1/tickets/4/purchase ")
	var dbID string
	var orders int
	if err := s.DB.QueryRow(context.Background(), `SELECT count(*), min(id::text) FROM orders WHERE buyer_id = 'alice'`).Scan(&orders, &dbID); err != nil {
		t.Fatal(err)
	}
	if orders != 1 || dbID != shownID {
		t.Fatalf("Postgres has %d orders of alice (%s); the page shows %s", orders, dbID, shownID)
	}
	mine := `document.querySelector('[data-seat="4"]').classList.contains('mine')`
	if !eval[bool](t, alice, mine) {
		t.Fatal("seat 4 is not shown as alice's")
	}
	// A reload still shows it as hers.
	run(t, alice, "reload",
		chromedp.Reload(),
		chromedp.Poll[chromedp.Void](`document.body.dataset.live === "true"`, chromedp.WithPollingInterval(10*time.Millisecond)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)),
		waitSeatState(4, "sold", time.Second))
	if !eval[bool](t, alice, mine) || eval[string](t, alice, `document.querySelector('[data-testid="order"]').dataset.orderId`) != shownID {
		t.Fatal("after a reload, seat 4 and its order are no longer shown as alice's")
	}
}

// Issue 17, defect 5: a hold's confirmation commits but its answer is a 503
// naming the order (as a pod's is when its commit outlives the answer). The
// page keeps the orderId, resolves it with GET /v1/orders/{id}, and shows
// the order: one confirmation reached the pod.
func TestBrowser_Confirm503NamesTheOrder_PageResolvesItWithGETOrders(t *testing.T) {
	s := newTestSale(t, 12, withHolds(time.Minute))
	proxy, alice := aliceThroughProxy(t, s, `^POST /v1/holds/[^/]+/confirm$`, 1,
		func(w http.ResponseWriter, answer *http.Response, body []byte) {
			var o checkout.Order
			if answer.StatusCode != http.StatusCreated || json.Unmarshal(body, &o) != nil {
				t.Errorf("the pod's confirmation: %d %s", answer.StatusCode, body)
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.Copy(w, bytes.NewBufferString(fmt.Sprintf(`{"type":"https://fluxorder.io/problems/unavailable","title":"Unavailable",`+
				`"status":503,"detail":"the order database is unavailable","code":"unavailable","orderId":%q}`, o.ID)))
		})
	run(t, alice, "hold seat 5, confirm, be told 503",
		chromedp.WaitVisible(chromedp.CSS(`[data-action="hold"]`)),
		clickSeat(5),
		chromedp.WaitVisible(chromedp.CSS(`#checkout [data-action="confirm"]`)),
		chromedp.Click(chromedp.CSS(`#checkout [data-action="confirm"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="order"]`)),
		waitSeatState(5, "sold", 2*time.Second))
	shownID := value(t, alice, "order id", chromedp.AttributeValue(chromedp.CSS(`[data-testid="order"]`), "data-order-id")).Value
	if got := proxy.calls("GET /v1/orders/" + shownID); len(got) == 0 {
		t.Fatalf("the page did not ask GET /v1/orders/%s; its calls: %q", shownID, proxy.calls(""))
	}
	if got := proxy.calls("POST /v1/holds/"); len(got) != 1 {
		t.Fatalf("want the one confirmation (the order was found), got %q", got)
	}
	var o checkout.Order
	if code := s.GetJSON("/v1/orders/"+shownID, &o); code != http.StatusOK || o.TicketID != 5 || o.BuyerID != "alice" {
		t.Fatalf("order %s: %d %+v", shownID, code, o)
	}
	if hidden := eval[bool](t, alice, `document.getElementById('checkout').hidden`); !hidden {
		t.Fatal("the checkout is still open after the order was found")
	}
}

// The same for a hold: its answer is lost after it was placed; the page
// retries with the same key, gets the hold back and opens the checkout on
// it. One hold in Postgres.
func TestBrowser_HoldAnswerLost_PageRetriesWithTheSameKey_CheckoutOnTheOneHold(t *testing.T) {
	s := newTestSale(t, 12, withHolds(time.Minute))
	proxy, alice := aliceThroughProxy(t, s, `^POST /v1/tickets/\d+/hold$`, 2, dropConnection)
	run(t, alice, "alice holds seat 6 and her answer is lost",
		chromedp.WaitVisible(chromedp.CSS(`[data-action="hold"]`)),
		clickSeat(6),
		chromedp.WaitVisible(chromedp.CSS(`#checkout [data-action="confirm"]`)))
	proxy.retriedWithOneKey(t, "POST /v1/tickets/6/hold ")
	var holds int
	if err := s.DB.QueryRow(context.Background(), `SELECT count(*) FROM holds WHERE buyer_id = 'alice'`).Scan(&holds); err != nil || holds != 1 {
		t.Fatalf("alice has %d holds (%v), want 1", holds, err)
	}
	if seat := eval[string](t, alice, `document.getElementById('checkout-seat').textContent`); seat != "6" {
		t.Fatalf("the checkout is on seat %q, want 6", seat)
	}
}
