package purchase_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/seatlock"
)

// Issue 20: Redis lost a sold seat's marker, so another pod takes its lock;
// Postgres refuses the order (the fence) and the pod counts the refusal,
// which FluxOrderFenceRefusals alerts on.
func TestMetrics_RedisLostASoldSeat_TheFenceRefusalIsCounted(t *testing.T) {
	s := newTestSale(t, 10)
	s.AddPod() // a pod that never saw seat 1 sold
	if a := s.BuyOn(0, 1, "first", ""); a.Status != http.StatusCreated {
		t.Fatalf("first purchase: %d %s", a.Status, a.Code)
	}
	s.AwaitSoldMarker(1) // deleted below: a marker landing later would answer for Postgres
	admin := purchasetest.AdminRedis()
	defer admin.Close()
	if err := admin.Del(context.Background(), "fs:"+s.Cfg.Sale+":ticket:1").Err(); err != nil {
		t.Fatal(err)
	}
	svc := s.Pods[1].Svc
	if n := purchasetest.Counter(t, svc, "flux_order_fence_refusals_total", "found", "sold"); n != 0 {
		t.Fatalf("%v fence refusals before any, want 0", n)
	}
	if a := s.BuyOn(1, 1, "second", ""); a.Status != http.StatusConflict || a.Code != "ticket_sold" {
		t.Fatalf("second buyer of the sold seat: want 409 ticket_sold, got %d %s", a.Status, a.Code)
	}
	if n := purchasetest.Counter(t, svc, "flux_order_fence_refusals_total", "found", "sold"); n != 1 {
		t.Errorf("fence refusals (sold) after Postgres refused a locked seat: %v, want 1", n)
	}
	if n := purchasetest.Counter(t, svc, "flux_order_redis_errors_total", "operation", "acquire"); n != 0 {
		t.Errorf("redis errors (acquire): %v, want 0 (a seat found taken is no error)", n)
	}
}

// Every operation's error series exists at 0 from the start (alerts and
// dashboards find them before the first failure), and so do the pool's.
func TestMetrics_ErrorSeriesExistFromTheStart(t *testing.T) {
	s := newTestSale(t, 10)
	families, err := s.Pods[0].Svc.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]bool{}
	for _, f := range families {
		series[f.GetName()] = map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				series[f.GetName()][l.GetValue()] = true
			}
		}
	}
	for name, ops := range map[string][]string{
		"flux_order_redis_errors_total":        seatlock.Operations,
		"flux_order_postgres_errors_total":     orderstore.Operations,
		"flux_order_fence_refusals_total":      {"sold", "held"},
		"flux_order_postgres_pool_connections": {"acquired", "idle", "constructing"},
	} {
		for _, op := range ops {
			if !series[name][op] {
				t.Errorf("no %s series labelled %s", name, op)
			}
		}
	}
	for _, name := range []string{"flux_order_postgres_pool_max_connections", "flux_order_postgres_pool_empty_acquires_total"} {
		if series[name] == nil {
			t.Errorf("no %s", name)
		}
	}
}
