package httpapi

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the answers' series. Label values are fixed sets (outcome
// codes), and every series is resolved once: the hot path must not hash
// label values.
type metrics struct {
	purchases map[string]outcomeSeries                 // purchase requests and latency by outcome
	holds     map[string]map[string]prometheus.Counter // hold requests by op and outcome
	holdLat   map[string]prometheus.Observer           // hold latency by op
	joins     map[string]prometheus.Counter            // POST /v1/queue by outcome
	polls     map[string]prometheus.Counter            // GET /v1/queue/{id} by outcome
	leaves    map[string]prometheus.Counter            // DELETE /v1/queue/{id} by outcome
	admin     map[string]prometheus.Counter            // admin API requests by outcome
	adminVec  *prometheus.CounterVec
	requests  *prometheus.CounterVec // fallbacks for an outcome outside the sets
	latency   *prometheus.HistogramVec
	holdsVec  *prometheus.CounterVec
	joinsVec  *prometheus.CounterVec
	pollsVec  *prometheus.CounterVec
	leavesVec *prometheus.CounterVec
}

type outcomeSeries struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// holdOps are the hold API's operations (the op label).
var holdOps = []string{"hold", "confirm", "release"}

// queueStates are the states a join or a poll answers.
var queueStates = []string{"waiting", "admitted", "sold_out", "closed"}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_purchase_requests_total",
			Help: "Purchase requests by outcome (created, replayed or a problem code) and the HTTP status it answers.",
		}, []string{"outcome", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_purchase_duration_seconds",
			Help:    "Purchase latency by outcome.",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
		holdsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_hold_requests_total",
			Help: "Hold requests by op (hold, confirm, release), outcome (created, replayed, released or a problem code) and the HTTP status it answers.",
		}, []string{"op", "outcome", "status"}),
		joinsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_queue_joins_total",
			Help: "POST /v1/queue by outcome (the state answered, or a problem code).",
		}, []string{"outcome"}),
		pollsVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_queue_polls_total",
			Help: "GET /v1/queue/{id} by outcome (the state answered, or a problem code).",
		}, []string{"outcome"}),
		leavesVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_queue_leaves_total",
			Help: "DELETE /v1/queue/{id} by outcome (left, or a problem code).",
		}, []string{"outcome"}),
	}
	holdLat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flux_order_hold_duration_seconds",
		Help:    "Hold request latency by op (hold, confirm, release).",
		Buckets: latencyBuckets,
	}, []string{"op"})
	codes := append([]string{unknownProblem.code}, problemCodes()...)
	m.purchases = map[string]outcomeSeries{}
	for _, o := range append([]string{"created", "replayed"}, codes...) {
		m.purchases[o] = outcomeSeries{m.requests.WithLabelValues(o, statusOf(o)), m.latency.WithLabelValues(o)}
	}
	m.holds, m.holdLat = map[string]map[string]prometheus.Counter{}, map[string]prometheus.Observer{}
	for _, op := range holdOps {
		m.holdLat[op] = holdLat.WithLabelValues(op)
		m.holds[op] = map[string]prometheus.Counter{}
		for _, o := range append([]string{"created", "replayed", "released"}, codes...) {
			m.holds[op][o] = m.holdsVec.WithLabelValues(op, o, statusOf(o))
		}
	}
	m.joins, m.polls = counters(m.joinsVec, queueStates, codes), counters(m.pollsVec, queueStates, codes)
	m.leaves = counters(m.leavesVec, []string{"left"}, codes)
	m.adminVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_order_admin_requests_total",
		Help: "Admin API requests (order cancellations, on the private port) by outcome (cancelled, replayed or a problem code) and the HTTP status it answers.",
	}, []string{"outcome", "status"})
	m.admin = map[string]prometheus.Counter{}
	m.admin["cancelled"] = m.adminVec.WithLabelValues("cancelled", "200")
	m.admin["replayed"] = m.adminVec.WithLabelValues("replayed", "200")
	for _, o := range codes {
		m.admin[o] = m.adminVec.WithLabelValues(o, statusOf(o))
	}
	reg.MustRegister(m.requests, m.latency, m.holdsVec, holdLat, m.joinsVec, m.pollsVec, m.leavesVec, m.adminVec)
	return m
}

// counters resolves vec's series for every outcome of the given sets.
func counters(vec *prometheus.CounterVec, sets ...[]string) map[string]prometheus.Counter {
	out := map[string]prometheus.Counter{}
	for _, set := range sets {
		for _, o := range set {
			out[o] = vec.WithLabelValues(o)
		}
	}
	return out
}

// count increments outcome's series of set, resolving it from vec only for
// an outcome outside the fixed sets (never expected).
func count(set map[string]prometheus.Counter, vec *prometheus.CounterVec, outcome string) {
	c, ok := set[outcome]
	if !ok {
		c = vec.WithLabelValues(outcome)
	}
	c.Inc()
}

// observe counts one purchase request and its latency.
func (m *metrics) observe(outcome string, seconds float64) {
	o, ok := m.purchases[outcome]
	if !ok {
		o = outcomeSeries{m.requests.WithLabelValues(outcome, statusOf(outcome)), m.latency.WithLabelValues(outcome)}
	}
	o.requests.Inc()
	o.latency.Observe(seconds)
}

// observeHold counts one hold request (op: hold, confirm or release).
func (m *metrics) observeHold(op, outcome string, seconds float64) {
	c, ok := m.holds[op][outcome]
	if !ok {
		c = m.holdsVec.WithLabelValues(op, outcome, statusOf(outcome))
	}
	c.Inc()
	m.holdLat[op].Observe(seconds)
}

// observeAdmin counts one admin API request.
func (m *metrics) observeAdmin(outcome string) {
	c, ok := m.admin[outcome]
	if !ok {
		c = m.adminVec.WithLabelValues(outcome, statusOf(outcome))
	}
	c.Inc()
}

func problemCodes() []string {
	codes := make([]string, len(problems))
	for i, p := range problems {
		codes[i] = p.code
	}
	return codes
}

// statusOf is the HTTP status an answer's outcome is given: the problem
// table's for a problem code (one status per code, so the label adds no
// series).
func statusOf(outcome string) string {
	switch outcome {
	case "created", "replayed":
		return "201"
	case "released":
		return "204"
	}
	for _, p := range problems {
		if p.code == outcome {
			return strconv.Itoa(p.status)
		}
	}
	return strconv.Itoa(unknownProblem.status)
}
