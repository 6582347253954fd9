package loadtest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// shortRetries runs the in-doubt retries in milliseconds for one test.
func shortRetries(t *testing.T) {
	first, most, n, settle := retryFirst, retryMax, maxRetries, settleWait
	retryFirst, retryMax, maxRetries, settleWait = time.Millisecond, 4*time.Millisecond, 5, 2*time.Second
	t.Cleanup(func() { retryFirst, retryMax, maxRetries, settleWait = first, most, n, settle })
}

// A sale whose first answers are lost: each purchase's key is seen once per
// attempt; a purchase that got 503s (naming its order), a hang-up or
// ticket_locked by its own attempt is retried with the same key until the
// order is answered, so every order is counted once.
func TestRun_InDoubtPurchases_AreRetriedWithTheirKeyUntilKnown(t *testing.T) {
	shortRetries(t)
	var mu sync.Mutex
	attempts := map[string]int{}
	var keysSeen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		attempts[key]++
		n := attempts[key]
		if n == 1 {
			keysSeen = append(keysSeen, key)
		}
		mu.Unlock()
		order := uuid.NewSHA1(uuid.NameSpaceOID, []byte(key))
		switch n {
		case 1:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(503)
			fmt.Fprintf(w, `{"code":"unavailable","orderId":%q}`, order)
		case 2:
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case 3:
			problem(w, 409, "ticket_locked")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"orderId":%q,"ticketId":1}`, order)
		}
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.Keyless, cfg.Requests = false, 40
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Summary
	if s.Count(Created) != 40 || s.Retried != 3*40 || s.Requests != 4*40 || s.InDoubt != 0 {
		t.Fatalf("want 40 orders after 3 retries each (160 requests), got %d created, %d retried, %d requests, %d in doubt",
			s.Count(Created), s.Retried, s.Requests, s.InDoubt)
	}
	if len(keysSeen) != 40 {
		t.Fatalf("want one key per purchase, got %d keys", len(keysSeen))
	}
	for k, n := range attempts {
		if !strings.HasPrefix(k, "lt-") || n != 4 {
			t.Fatalf("key %q sent %d times, want lt-… 4 times", k, n)
		}
	}
	if !strings.Contains(textOf(t, s), "120 retried with their key") {
		t.Fatalf("the summary must say how many were retried:\n%s", textOf(t, s))
	}
}

// A 503 that never settles names its order: GET /v1/orders/{id} resolves
// it after the retries, found (counted with the 201s) or not.
func TestRun_UnsettledOrders_AreResolvedByGET(t *testing.T) {
	shortRetries(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, ok := strings.CutPrefix(r.URL.Path, "/v1/orders/"); ok {
			if u := uuid.MustParse(id); u[15]%2 == 0 {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"orderId":%q,"ticketId":%d}`, u, u[15])
				return
			}
			problem(w, 404, "order_not_found")
			return
		}
		order := uuid.NewSHA1(uuid.NameSpaceOID, []byte(r.Header.Get("Idempotency-Key")))
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(503)
		fmt.Fprintf(w, `{"code":"unavailable","orderId":%q}`, order)
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL)
	cfg.Keyless, cfg.Requests = false, 30
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var even int
	for _, o := range res.Created {
		if o.ID[15]%2 != 0 || o.TicketID != int64(o.ID[15]) {
			t.Fatalf("resolved an order GET did not find: %+v", o)
		}
		even++
	}
	if res.Summary.Resolved != int64(even) || even == 0 || res.Summary.InDoubt != 0 || res.Summary.Count(Created) != 0 {
		t.Fatalf("want the found orders resolved (%d) and nothing left in doubt, got %+v", even, res.Summary)
	}
}

func textOf(t *testing.T, s Summary) string {
	t.Helper()
	var b strings.Builder
	if err := WriteText(&b, s); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
