package opcount

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

var errRefused = errors.New("refused")

func TestErrors_CountsFailuresByOperation_NotOutcomesNorCancels(t *testing.T) {
	e := New("x_errors_total", "help", []string{"get", "set"}, func(err error) bool { return errors.Is(err, errRefused) })
	if n := testutil.CollectAndCount(e.Collector()); n != 2 {
		t.Fatalf("%d series before any failure, want 2 (one per operation, at 0)", n)
	}
	e.Observe("get", fmt.Errorf("read: %w", errors.New("connection reset")))
	e.Observe("get", fmt.Errorf("wrapped: %w", errRefused))
	e.Observe("set", context.Canceled)
	e.Observe("set", nil)
	func() (err error) {
		defer e.Deferred("set", &err)
		return context.DeadlineExceeded
	}()
	for op, want := range map[string]float64{"get": 1, "set": 1} {
		if got := testutil.ToFloat64(e.byOp[op]); got != want {
			t.Errorf("operation %s: %v failures counted, want %v", op, got, want)
		}
	}
	var nilErrors *Errors
	nilErrors.Observe("get", errors.New("boom")) // must not panic
}
