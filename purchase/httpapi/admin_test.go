package httpapi

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/sale"
)

const cancelPath = "/admin/v1/orders/01900000-0000-7000-8000-000000000001/cancel"

func (f *fixture) doAdmin(method, path, body, token string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	f.admin.ServeHTTP(rec, req)
	return rec
}

func TestAdminCancel_TokenBodyAndAnswers(t *testing.T) {
	const body = `{"reason": "chargeback", "cancelledBy": "ops@example"}`
	for _, c := range []struct {
		name, method, path, body, token string
		status                          int
		code                            string
	}{
		{"no token", http.MethodPost, cancelPath, body, "", 401, "admin_auth_required"},
		{"wrong token", http.MethodPost, cancelPath, body, "nope", 401, "admin_auth_invalid"},
		{"the token's prefix", http.MethodPost, cancelPath, body, fixtureAdminToken[:10], 401, "admin_auth_invalid"},
		{"GET", http.MethodGet, cancelPath, "", fixtureAdminToken, 405, "method_not_allowed"},
		{"not an order id", http.MethodPost, "/admin/v1/orders/42/cancel", body, fixtureAdminToken, 404, "order_not_found"},
		{"unknown field", http.MethodPost, cancelPath, `{"reason":"x","cancelledBy":"y","force":"1"}`, fixtureAdminToken, 400, "invalid_request"},
		{"no reason", http.MethodPost, cancelPath, `{"cancelledBy":"y"}`, fixtureAdminToken, 400, "invalid_request"},
		{"empty by", http.MethodPost, cancelPath, `{"reason":"x","cancelledBy":""}`, fixtureAdminToken, 400, "invalid_request"},
		{"a control character", http.MethodPost, cancelPath, `{"reason":"x\u0007","cancelledBy":"y"}`, fixtureAdminToken, 400, "invalid_request"},
		{"a reason too long", http.MethodPost, cancelPath, `{"reason":"` + strings.Repeat("é", MaxReasonLen+1) + `","cancelledBy":"y"}`, fixtureAdminToken, 400, "invalid_request"},
		{"a body too large", http.MethodPost, cancelPath, `{"reason":"` + strings.Repeat("x", MaxAdminBodyBytes) + `","cancelledBy":"y"}`, fixtureAdminToken, 400, "invalid_request"},
		{"another admin path", http.MethodPost, "/admin/v1/orders", body, fixtureAdminToken, 404, "not_found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture()
			rec := f.doAdmin(c.method, c.path, c.body, c.token)
			p, resp := readProblem(t, rec)
			if resp.StatusCode != c.status || p.Code != c.code {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, p, c.status, c.code)
			}
			if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="flux-order admin"` {
				t.Fatalf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
			if f.checkout.calls != 0 {
				t.Fatal("a refused request must not reach checkout")
			}
		})
	}

	f := newFixture()
	rec := f.doAdmin(http.MethodPost, cancelPath, body, fixtureAdminToken)
	var got checkout.Cancellation
	if err := json.NewDecoder(rec.Body).Decode(&got); rec.Code != 200 || err != nil || got.Reason != "chargeback" || got.CancelledBy != "ops@example" ||
		got.OrderID.String() != "01900000-0000-7000-8000-000000000001" || rec.Header().Get(replayedHeader) != "" {
		t.Fatalf("cancel: %d %+v %v", rec.Code, got, err)
	}
	f.checkout.replayed = true
	if rec := f.doAdmin(http.MethodPost, cancelPath, body, fixtureAdminToken); rec.Code != 200 || rec.Header().Get(replayedHeader) != "true" {
		t.Fatalf("a repeat: %d %v", rec.Code, rec.Header())
	}
	f.checkout.err = sale.ErrOrderNotFound
	if p, resp := readProblem(t, f.doAdmin(http.MethodPost, cancelPath, body, fixtureAdminToken)); resp.StatusCode != 404 || p.Code != "order_not_found" {
		t.Fatalf("unknown order: %d %+v", resp.StatusCode, p)
	}
	if n := f.adminRequests("cancelled", "200"); n != 1 {
		t.Fatalf("cancelled answers counted %v, want 1", n)
	}
	if n := f.adminRequests("admin_auth_invalid", "401"); n != 0 {
		t.Fatalf("every answer's series exists at 0 from the start: admin_auth_invalid %v", n)
	}

	// The admin API is never on the public handler.
	if rec := f.do(http.MethodPost, cancelPath, body, map[string]string{"Authorization": "Bearer " + fixtureAdminToken}); rec.Code != 404 {
		t.Fatalf("the public API answered %d for the admin path", rec.Code)
	}
}

// adminRequests reads flux_order_admin_requests_total{outcome, status}
// (-1 when the series does not exist).
func (f *fixture) adminRequests(outcome, status string) float64 {
	mfs, _ := f.registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "flux_order_admin_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			if l["outcome"] == outcome && l["status"] == status {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

func TestAdminCancel_NoTokenConfigured_IsOff(t *testing.T) {
	f := newFixture()
	api := New(Deps{Checkout: f.checkout, Queue: f.queue, Feed: f.feed, Registerer: prometheus.NewRegistry(), Log: slog.New(slog.DiscardHandler),
		Facts: func() sale.Facts { return sale.Facts{} }, Draining: func() bool { return false }})
	f.admin = api.AdminHandler()
	for _, tok := range []string{"", "anything"} {
		p, resp := readProblem(t, f.doAdmin(http.MethodPost, cancelPath, `{"reason":"x","cancelledBy":"y"}`, tok))
		if resp.StatusCode != 404 || p.Code != "admin_disabled" || f.checkout.calls != 0 {
			t.Fatalf("token %q: %d %+v", tok, resp.StatusCode, p)
		}
	}
}

func TestOrder_Cancelled_AnswersOrderCancelledNamingIt(t *testing.T) {
	f := newFixture()
	f.checkout.err = &sale.CancelledOrderError{OrderID: fakeOrder.ID, BuyerID: "alice"}
	p, resp := readProblem(t, f.do(http.MethodGet, "/v1/orders/"+fakeOrder.ID.String(), "", nil))
	if resp.StatusCode != 409 || p.Code != "order_cancelled" || p.OrderID != fakeOrder.ID.String() {
		t.Fatalf("got %d %+v", resp.StatusCode, p)
	}
}
