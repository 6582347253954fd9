package purchase_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
)

// --pprof adds net/http/pprof to the metrics listener, beside /metrics,
// and never to the API; without it the metrics listener serves the metrics
// alone.
func TestMetricsHandler_PprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		s := purchasetest.NewSale(t, 10, func(c *purchase.Config) { c.Pprof = on })
		metrics := httptest.NewServer(s.Pods[0].Svc.MetricsHandler())
		for path, want := range map[string]string{
			"/metrics":             "flux_order_",
			"/debug/pprof/cmdline": map[bool]string{false: "flux_order_", true: "purchase.test"}[on],
		} {
			resp, err := metrics.Client().Get(metrics.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
				t.Errorf("pprof %v: %s: %d, body lacks %q", on, path, resp.StatusCode, want)
			}
		}
		metrics.Close()
		rec := httptest.NewRecorder()
		s.Pods[0].Svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/debug/pprof/cmdline", nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("pprof %v: the API answers /debug/pprof/cmdline %d, want 404", on, rec.Code)
		}
	}
}
