package purchase_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// BenchmarkHandler_HotSeatSold is the handler's own CPU for a refusal of a
// sold seat, without sockets: what a request costs above a null server.
func BenchmarkHandler_HotSeatSold(b *testing.B) {
	s := newTestSale(b, 10)
	if a := s.Buy(1, "winner"); a.Status != http.StatusCreated {
		b.Fatal(a.Code)
	}
	h := s.Pods[0].Svc.Handler()
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

// BenchmarkHandler_QueuePoll is a waiting buyer's poll: decode and verify
// the queue id, answer from the pod's view.
func BenchmarkHandler_QueuePoll(b *testing.B) {
	s := newQueueSale(b, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 1}), func(c *purchase.Config) {
		c.Schedule.StartsAt = time.Now().Add(time.Hour)
	})
	j := s.join(0, "buyer-42")
	h := s.Pods[0].Svc.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, "/v1/queue/"+j.Body.QueueID, nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("got %d", w.Code)
		}
	}
}

// BenchmarkHandler_HotSeatSoldWithPass is BenchmarkHandler_HotSeatSold
// with a waiting room: every request's pass is checked (one HMAC).
func BenchmarkHandler_HotSeatSoldWithPass(b *testing.B) {
	s := newQueueSale(b, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 1}))
	pass := s.Pods[0].Svc.Queue.Signer().Pass("buyer-42", time.Now().Add(time.Hour))
	if a := s.buyWithPass(1, "buyer-42", pass); a.Status != http.StatusCreated {
		b.Fatal(a.Code)
	}
	h := s.Pods[0].Svc.Handler()
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/v1/tickets/1/purchase", strings.NewReader(`{"buyerId":"buyer-42"}`))
		req.Header.Set("Authorization", "Bearer "+pass)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusConflict {
			b.Fatalf("got %d", w.Code)
		}
	}
}
