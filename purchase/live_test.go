package purchase

import (
	"net/http"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase/statusreport"
)

func TestLive_RunningPodTakesGrowthLimitAndLockTTL_WithoutRestart(t *testing.T) {
	s := newTestSale(t, 10)
	pod := s.pods[0].svc
	if a := s.buy(11, "early"); a.status != http.StatusNotFound {
		t.Fatalf("seat 11 before growth: want 404, got %d %s", a.status, a.code)
	}

	grow := make(chan int64, 1)
	done := make(chan struct{})
	go func() { defer close(done); pod.followGrowth(t.Context(), grow) }()
	pod.apply(statusreport.Settings{Tickets: 20, MaxTicketsPerBuyer: 1, LockTTL: 300 * time.Millisecond}, grow)
	deadline := time.Now().Add(10 * time.Second)
	for pod.Tickets() != 20 {
		if time.Now().After(deadline) {
			t.Fatalf("the running pod never widened its range to 20 seats (has %d)", pod.Tickets())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var av Availability
	if s.getJSON("/v1/availability", &av); av.Tickets != 20 {
		t.Fatalf("the new seats must be seeded before they are offered: %+v", av)
	}
	if a := s.buy(20, "grown"); a.status != http.StatusCreated {
		t.Fatalf("a grown seat on the running pod: want 201, got %d %s", a.status, a.code)
	}
	if a := s.buy(19, "grown"); a.status != http.StatusForbidden || a.code != "buyer_limit_reached" {
		t.Fatalf("the live limit of 1: want 403 buyer_limit_reached, got %d %s", a.status, a.code)
	}
	if got := pod.locks.TTL(); got != 300*time.Millisecond {
		t.Fatalf("lock TTL %v, want the live 300ms", got)
	}

	// A smaller inventory (impossible through the API) is never applied.
	pod.apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second}, grow)
	if pod.Tickets() != 20 {
		t.Fatalf("the pod shrank to %d seats", pod.Tickets())
	}
}

func TestLive_SoldOutFromTheStatus_AnsweredWithoutRedis(t *testing.T) {
	s := newTestSale(t, 3)
	pod := s.pods[0].svc
	grow := make(chan int64, 1)
	pod.apply(statusreport.Settings{Tickets: 3, LockTTL: time.Second, SoldOut: true}, grow)
	if a := s.buy(2, "late"); a.status != http.StatusConflict || a.code != "ticket_sold" {
		t.Fatalf("a seat of a sold-out sale: want 409 ticket_sold, got %d %s", a.status, a.code)
	}
	if a := s.post(0, "/v1/purchase", `{"buyerId":"late"}`, nil); a.status != http.StatusConflict || a.code != "sold_out" {
		t.Fatalf("any seat of a sold-out sale: want 409 sold_out, got %d %s", a.status, a.code)
	}
	// Growth ends it: the new inventory is not sold out.
	pod.apply(statusreport.Settings{Tickets: 3, LockTTL: time.Second}, grow)
	if a := s.buy(2, "early"); a.status != http.StatusCreated {
		t.Fatalf("after sold out was lifted: want 201, got %d %s", a.status, a.code)
	}
}
