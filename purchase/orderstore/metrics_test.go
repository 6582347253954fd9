package orderstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Issue 20: a failed operation is counted under its name; an answer (no
// such order) and a caller who gave up are not. The pool's series say how
// many connections are in use out of the maximum.
func TestMetrics_FailuresByOperation_AndPoolSaturation(t *testing.T) {
	s := newStore(t)
	if err := s.Seed(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s.Instrument(reg)

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if _, err := s.Counts(expired); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Counts past its deadline: %v, want a deadline error", err)
	}
	if _, err := s.Order(context.Background(), uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Order of no order: %v, want ErrNotFound", err)
	}
	canceled, stop := context.WithCancel(context.Background())
	stop()
	if _, err := s.Order(canceled, uuid.New()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Order with a canceled context: %v, want context.Canceled", err)
	}
	for op, want := range map[string]float64{"counts": 1, "order": 0} {
		if got := testutil.ToFloat64(s.errs.Series(op)); got != want {
			t.Errorf("flux_order_postgres_errors_total{operation=%q} = %v, want %v", op, got, want)
		}
	}

	conn, err := s.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	got, err := testutil.GatherAndCount(reg, "flux_order_postgres_pool_connections", "flux_order_postgres_pool_max_connections")
	if err != nil || got != 4 {
		t.Fatalf("pool series: %d (%v), want 3 states and the maximum", got, err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += ":" + l.GetValue()
			}
			values[key] = m.GetGauge().GetValue()
		}
	}
	if values["flux_order_postgres_pool_connections:acquired"] != 1 || values["flux_order_postgres_pool_max_connections"] != 16 {
		t.Errorf("pool with one connection held: %v, want acquired 1 of max 16", values)
	}
}
