package purchase

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the purchase pod's Prometheus series. Label values are fixed
// sets (outcome codes), so cardinality stays bounded.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec   // purchase requests by outcome
	latency  *prometheus.HistogramVec // purchase latency by outcome
	locks    *prometheus.CounterVec   // lock attempts by result
	sold     prometheus.Counter       // seats sold by this pod
	holds    *prometheus.CounterVec   // hold requests by op and outcome
	holdLat  *prometheus.HistogramVec // hold request latency by op

	// byOutcome resolves each outcome's series once: the hot path must not
	// hash label values.
	byOutcome map[string]outcomeSeries

	// locks' series, resolved once: the hot path must not hash labels.
	lockAcquired, lockHeld, lockSold, lockKnownSold, lockKnownHeld, lockError prometheus.Counter
	lockOnHold, lockKnownOnHold                                               prometheus.Counter

	// knownLimited counts purchases refused from the pod's memory of
	// buyers at the limit (no Redis, no Postgres).
	knownLimited prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_purchase_requests_total",
			Help: "Purchase requests by outcome (created, replayed or a problem code).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_purchase_duration_seconds",
			Help:    "Purchase latency by outcome.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
		locks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_lock_attempts_total",
			Help: "Seat lock attempts by result: acquired, held, on_hold (a checkout hold), sold, known_sold, known_held, known_on_hold and known_limited (refused from this pod's memory), error.",
		}, []string{"result"}),
		sold: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_order_seats_sold_total",
			Help: "Seats sold (orders confirmed) by this pod.",
		}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_hold_requests_total",
			Help: "Hold requests by op (hold, confirm, release) and outcome (created, replayed, released or a problem code).",
		}, []string{"op", "outcome"}),
		holdLat: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_hold_duration_seconds",
			Help:    "Hold request latency by op (hold, confirm, release).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"op"}),
	}
	m.byOutcome = map[string]outcomeSeries{}
	for _, o := range append([]string{"created", "replayed", unknownProblem.code}, problemCodes()...) {
		m.byOutcome[o] = outcomeSeries{m.requests.WithLabelValues(o), m.latency.WithLabelValues(o)}
	}
	m.lockAcquired = m.locks.WithLabelValues("acquired")
	m.lockHeld = m.locks.WithLabelValues("held")
	m.lockSold = m.locks.WithLabelValues("sold")
	m.lockKnownSold = m.locks.WithLabelValues("known_sold")
	m.lockKnownHeld = m.locks.WithLabelValues("known_held")
	m.lockError = m.locks.WithLabelValues("error")
	m.lockOnHold = m.locks.WithLabelValues("on_hold")
	m.lockKnownOnHold = m.locks.WithLabelValues("known_on_hold")
	m.knownLimited = m.locks.WithLabelValues("known_limited")
	m.registry.MustRegister(m.requests, m.latency, m.locks, m.sold, m.holds, m.holdLat,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

type outcomeSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// observe counts one purchase request and its latency.
func (m *metrics) observe(outcome string, seconds float64) {
	o, ok := m.byOutcome[outcome]
	if !ok {
		o = outcomeSeries{m.requests.WithLabelValues(outcome), m.latency.WithLabelValues(outcome)}
	}
	o.requests.Inc()
	o.latency.Observe(seconds)
}

// observeHold counts one hold request (op: hold, confirm or release). Both
// label sets are bounded: three ops, and outcomes from the problems table.
func (m *metrics) observeHold(op, outcome string, seconds float64) {
	m.holds.WithLabelValues(op, outcome).Inc()
	m.holdLat.WithLabelValues(op).Observe(seconds)
}

func problemCodes() []string {
	codes := make([]string, len(problems))
	for i, p := range problems {
		codes[i] = p.code
	}
	return codes
}
