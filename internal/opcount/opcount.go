// Package opcount counts a dependency's failed operations by operation name
// (issue 20: Redis and PostgreSQL errors by operation). The operations are a
// fixed set named in code, and every series exists from the start at 0, so
// a query or an alert finds it before the first failure.
package opcount

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Errors is one counter of failures, labelled operation.
type Errors struct {
	vec  *prometheus.CounterVec
	byOp map[string]prometheus.Counter
	// outcome says which errors are answers, not failures (a seat sold, a
	// row not found): those are not counted.
	outcome func(error) bool
}

// New returns the counter name (a _total name) with a series for each of
// ops. outcome may be nil. A caller that gave up (context.Canceled) is
// never counted: the dependency did not fail.
func New(name, help string, ops []string, outcome func(error) bool) *Errors {
	e := &Errors{
		vec:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"operation"}),
		byOp:    make(map[string]prometheus.Counter, len(ops)),
		outcome: outcome,
	}
	for _, op := range ops {
		e.byOp[op] = e.vec.WithLabelValues(op)
	}
	return e
}

// Series is op's counter (for tests).
func (e *Errors) Series(op string) prometheus.Counter { return e.vec.WithLabelValues(op) }

// Collector is what to register.
func (e *Errors) Collector() prometheus.Collector { return e.vec }

// Observe counts err against op when it is a failure. Nil-safe.
func (e *Errors) Observe(op string, err error) {
	if e == nil || err == nil || errors.Is(err, context.Canceled) || (e.outcome != nil && e.outcome(err)) {
		return
	}
	c, ok := e.byOp[op]
	if !ok {
		c = e.vec.WithLabelValues(op) // an op missing from the set: still counted
	}
	c.Inc()
}

// Deferred is Observe for a defer statement over a named error result:
// defer e.Deferred("confirm", &err).
func (e *Errors) Deferred(op string, err *error) { e.Observe(op, *err) }
