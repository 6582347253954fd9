package purchase_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/sale"
)

func TestAPI_BadInput_ClearProblems(t *testing.T) {
	s := newTestSale(t, 10)
	long := strings.Repeat("b", sale.MaxBuyerIDLen+1)
	cases := []struct {
		name, path, body string
		header           map[string]string
		status           int
		code             string
	}{
		{"ticket zero", "/v1/tickets/0/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket past the inventory", "/v1/tickets/11/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"ticket not a number", "/v1/tickets/abc/purchase", `{"buyerId":"a"}`, nil, 404, "ticket_not_found"},
		{"malformed json", "/v1/tickets/1/purchase", `{"buyerId":`, nil, 400, "invalid_request"},
		{"unknown field", "/v1/tickets/1/purchase", `{"buyerId":"a","seat":2}`, nil, 400, "invalid_request"},
		{"empty buyer", "/v1/tickets/1/purchase", `{"buyerId":""}`, nil, 400, "invalid_request"},
		{"missing buyer", "/v1/tickets/1/purchase", `{}`, nil, 400, "invalid_request"},
		{"buyer too long", "/v1/tickets/1/purchase", `{"buyerId":"` + long + `"}`, nil, 400, "invalid_request"},
		{"trailing data", "/v1/tickets/1/purchase", `{"buyerId":"a"} {}`, nil, 400, "invalid_request"},
		{"body too large", "/v1/tickets/1/purchase", `{"buyerId":"a","x":"` + strings.Repeat("x", 2*httpapi.MaxBodyBytes) + `"}`, nil, 400, "invalid_request"},
		{"key too long", "/v1/tickets/1/purchase", `{"buyerId":"a"}`, map[string]string{"Idempotency-Key": strings.Repeat("k", httpapi.MaxIdemKeyLen+1)}, 400, "invalid_request"},
		{"any seat without buyer", "/v1/purchase", `{}`, nil, 400, "invalid_request"},
		{"unknown endpoint", "/v2/nothing", `{}`, nil, 404, "not_found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := s.Post(0, c.path, c.body, c.header)
			if a.Status != c.status || a.Code != c.code {
				t.Fatalf("want %d %s, got %d %s", c.status, c.code, a.Status, a.Code)
			}
		})
	}
	if a := s.Audit(); a.Orders != 0 {
		t.Fatalf("bad input must not write anything, found %d orders", a.Orders)
	}
	resp, err := s.Client.Get(s.Pods[0].URL + "/v1/tickets/1/purchase")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("GET on a purchase: want 405 problem, got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

func TestAPI_SaleWindowAndPause_RefusedWithoutIO(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		sch    sale.Schedule
		status int
		code   string
	}{
		{"not started", sale.Schedule{StartsAt: now.Add(time.Hour)}, 403, "sale_not_started"},
		{"ended", sale.Schedule{StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)}, 403, "sale_ended"},
		{"paused", sale.Schedule{Paused: true}, 503, "sale_paused"},
		{"open", sale.Schedule{StartsAt: now.Add(-time.Hour), EndsAt: now.Add(time.Hour)}, 201, ""},
	}
	s := newTestSale(t, 10)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.Pods[0].Svc.Checkout.SetSchedule(c.sch)
			a := s.Buy(int64(i)+1, "b")
			if a.Status != c.status || a.Code != c.code {
				t.Fatalf("want %d %q, got %d %q", c.status, c.code, a.Status, a.Code)
			}
		})
	}
}

func TestAPI_ReadEndpoints(t *testing.T) {
	s := newTestSale(t, 10)
	a := s.Buy(4, "reader")
	if a.Status != http.StatusCreated || a.Order.TicketID != 4 || a.Order.BuyerID != "reader" || a.Order.PurchasedAt.IsZero() {
		t.Fatalf("purchase: %+v", a)
	}
	var o checkout.Order
	if st := s.GetJSON("/v1/orders/"+a.Order.ID.String(), &o); st != 200 || o != a.Order {
		t.Fatalf("GET order: %d %+v, want %+v", st, o, a.Order)
	}
	if st := s.GetJSON("/v1/orders/00000000-0000-0000-0000-000000000001", nil); st != 404 {
		t.Fatalf("unknown order: want 404, got %d", st)
	}
	var tk httpapi.TicketBody
	if st := s.GetJSON("/v1/tickets/5", &tk); st != 200 || tk.Status != checkout.TicketAvailable {
		t.Fatalf("ticket 5: %d %+v", st, tk)
	}
	if _, err := s.Locks().Acquire(t.Context(), 5, "someone-else"); err != nil {
		t.Fatal(err)
	}
	if s.GetJSON("/v1/tickets/5", &tk); tk.Status != checkout.TicketHeld {
		t.Fatalf("locked ticket 5: %+v, want held", tk)
	}
	if st := s.GetJSON("/v1/tickets/99", nil); st != 404 {
		t.Fatalf("ticket 99: want 404, got %d", st)
	}
	var av checkout.Availability
	if s.GetJSON("/v1/availability", &av); av != (checkout.Availability{Tickets: 10, Sold: 1, Available: 9}) {
		t.Fatalf("availability %+v", av)
	}
	metrics := httptest.NewServer(s.Pods[0].Svc.MetricsHandler())
	defer metrics.Close()
	for url, want := range map[string]string{
		s.Pods[0].URL + "/healthz": "ok", s.Pods[0].URL + "/readyz": "ok",
		metrics.URL + "/metrics": `flux_order_purchase_requests_total{outcome="created",status="201"} 1`,
	} {
		resp, err := s.Client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d, body lacks %q", url, resp.StatusCode, want)
		}
	}
}

func TestStart_SeedingIsIdempotentAndGrows(t *testing.T) {
	s := newTestSale(t, 100)
	s.AddPod() // a second pod seeding the same sale at once changes nothing
	var av checkout.Availability
	if s.GetJSON("/v1/availability", &av); av.Tickets != 100 {
		t.Fatalf("after two seeds want 100 tickets, got %+v", av)
	}
	s.Buy(100, "b")
	s.Cfg.Tickets = 250
	s.AddPod()
	if s.GetJSON("/v1/availability", &av); av != (checkout.Availability{Tickets: 250, Sold: 1, Available: 249}) {
		t.Fatalf("after growing want 250 tickets, 1 sold: %+v", av)
	}
	if a := s.BuyOn(2, 250, "b2", ""); a.Status != http.StatusCreated {
		t.Fatalf("a grown seat must be for sale: %d %s", a.Status, a.Code)
	}
	// Fewer tickets than the database holds (a sale re-created over its
	// retained data): no crash loop; the pod serves the seats asked for and
	// the inventory stays as it is.
	s.Cfg.Tickets = 50
	s.AddPod()
	if a := s.BuyOn(3, 60, "b3", ""); a.Status != http.StatusNotFound {
		t.Fatalf("a seat beyond --tickets: want 404, got %d %s", a.Status, a.Code)
	}
	if s.GetJSON("/v1/availability", &av); av.Tickets != 250 {
		t.Fatalf("the stored inventory must not shrink: %+v", av)
	}
}

func TestServe_SIGTERM_FinishesInFlightPurchases(t *testing.T) {
	s := newTestSale(t, 10)
	inTx := make(chan struct{})
	pod := s.Run(nil, func(svc *purchase.Service) {
		svc.Checkout.SetBeforeConfirm(func(int64) { close(inTx); time.Sleep(500 * time.Millisecond) })
	})
	base, stop, served := pod.URL, pod.SIGTERM, pod.Served

	answer := make(chan *http.Response)
	go func() {
		resp, err := http.Post(base+"/v1/tickets/2/purchase", "application/json", strings.NewReader(`{"buyerId":"late"}`))
		if err != nil {
			t.Errorf("in-flight purchase cut off: %v", err)
			close(answer)
			return
		}
		answer <- resp
	}()
	<-inTx
	stop() // SIGTERM
	if resp := <-answer; resp == nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("the purchase in flight at SIGTERM must complete with 201, got %+v", resp)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after SIGTERM: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("after shutdown the listener must be closed")
	}
	if a := s.Audit(); a.Orders != 1 {
		t.Fatalf("want the in-flight order committed, got %d orders", a.Orders)
	}
}
