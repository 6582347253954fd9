package purchase

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkHandler_HotSeatSold is the handler's own CPU for a refusal of a
// sold seat, without sockets: what a request costs above a null server.
func BenchmarkHandler_HotSeatSold(b *testing.B) {
	s := newTestSale(b, 10)
	if a := s.buy(1, "winner"); a.status != http.StatusCreated {
		b.Fatal(a.code)
	}
	h := s.pods[0].svc.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/tickets/1/purchase", strings.NewReader(`{"buyerId":"buyer-42"}`))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusConflict {
			b.Fatalf("got %d", w.Code)
		}
	}
}
