package purchase_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func TestLive_RunningPodTakesGrowthLimitAndLockTTL_WithoutRestart(t *testing.T) {
	s := newTestSale(t, 10)
	pod := s.Pods[0].Svc
	if a := s.Buy(11, "early"); a.Status != http.StatusNotFound {
		t.Fatalf("seat 11 before growth: want 404, got %d %s", a.Status, a.Code)
	}

	pod.Apply(statusreport.Settings{Tickets: 20, MaxTicketsPerBuyer: 1, LockTTL: 300 * time.Millisecond})
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the running pod widens its range to 20 seats", testservers.Holds(func() bool { return pod.Checkout.Tickets() == 20 }))
	var av checkout.Availability
	if s.GetJSON("/v1/availability", &av); av.Tickets != 20 {
		t.Fatalf("the new seats must be seeded before they are offered: %+v", av)
	}
	if a := s.Buy(20, "grown"); a.Status != http.StatusCreated {
		t.Fatalf("a grown seat on the running pod: want 201, got %d %s", a.Status, a.Code)
	}
	if a := s.Buy(19, "grown"); a.Status != http.StatusForbidden || a.Code != "buyer_limit_reached" {
		t.Fatalf("the live limit of 1: want 403 buyer_limit_reached, got %d %s", a.Status, a.Code)
	}
	if got := pod.Checkout.LockTTL(); got != 300*time.Millisecond {
		t.Fatalf("lock TTL %v, want the live 300ms", got)
	}

	// A smaller inventory (impossible through the API) is never applied.
	pod.Apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second})
	if pod.Checkout.Tickets() != 20 {
		t.Fatalf("the pod shrank to %d seats", pod.Checkout.Tickets())
	}
}

func TestLive_SoldOutFromTheStatus_AnsweredWithoutRedis(t *testing.T) {
	s := newTestSale(t, 3)
	pod := s.Pods[0].Svc
	pod.Apply(statusreport.Settings{Tickets: 3, LockTTL: time.Second, SoldOut: true})
	if a := s.Buy(2, "late"); a.Status != http.StatusConflict || a.Code != "ticket_sold" {
		t.Fatalf("a seat of a sold-out sale: want 409 ticket_sold, got %d %s", a.Status, a.Code)
	}
	if a := s.Post(0, "/v1/purchase", `{"buyerId":"late"}`, nil); a.Status != http.StatusConflict || a.Code != "sold_out" {
		t.Fatalf("any seat of a sold-out sale: want 409 sold_out, got %d %s", a.Status, a.Code)
	}
	// Growth ends it: the new inventory is not sold out.
	pod.Apply(statusreport.Settings{Tickets: 3, LockTTL: time.Second})
	if a := s.Buy(2, "early"); a.Status != http.StatusCreated {
		t.Fatalf("after sold out was lifted: want 201, got %d %s", a.Status, a.Code)
	}
}
