package orderstore

import (
	"errors"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/internal/opcount"
)

// Operations are the values of flux_order_postgres_errors_total's operation
// label: the Store's and the Admitter's methods.
var Operations = []string{
	"ping", "migrate", "seed", "confirm", "order", "order_by_key", "ticket_state", "counts", "unsold_from",
	"place_hold", "confirm_hold", "release_hold", "hold",
	"join_queue", "queue_snapshot", "try_admitter", "admit_next", "count_waiting", "count_active", "shuffle",
	"seat_states", "seat_changes",
	"cancel_order", "cancellation", "recent_cancellations", "cancelled_count",
}

// newErrors counts failed operations: not the answers a sale gives (a seat
// sold or held, a buyer at the limit, a row not found, another admitter).
func newErrors() *opcount.Errors {
	return opcount.New("flux_order_postgres_errors_total",
		"Failed PostgreSQL operations by operation (connection, timeout, server error; not a refusal such as a seat sold).",
		Operations, func(err error) bool {
			for _, outcome := range []error{ErrTicketSold, ErrTicketHeld, ErrBuyerLimit, ErrKeyReused, ErrNotFound,
				ErrShrink, ErrHoldNotFound, ErrHoldExpired, ErrNotAdmitter, ErrOrderCancelled} {
				if errors.Is(err, outcome) {
					return true
				}
			}
			return false
		})
}

// Instrument registers the store's series with reg (the pod's registry):
// failed operations, the connection pool's saturation, and the group
// commits' batch sizes, waits and commit times.
func (s *Store) Instrument(reg prometheus.Registerer) {
	reg.MustRegister(s.errs.Collector(), poolCollector{s.pool})
	reg.MustRegister(s.metrics.collectors()...)
}

// poolCollector reads pgxpool.Stat at scrape time: connections in use
// against the maximum say when purchases queue for a connection.
type poolCollector struct{ pool *pgxpool.Pool }

var (
	poolConns = prometheus.NewDesc("flux_order_postgres_pool_connections",
		"Connections of the pod's PostgreSQL pool by state: acquired (in use), idle, constructing.", []string{"state"}, nil)
	poolMax = prometheus.NewDesc("flux_order_postgres_pool_max_connections",
		"The most connections the pool opens (pool_max_conns).", nil, nil)
	poolAcquires = prometheus.NewDesc("flux_order_postgres_pool_acquires_total",
		"Connections acquired from the pool.", nil, nil)
	poolWaits = prometheus.NewDesc("flux_order_postgres_pool_empty_acquires_total",
		"Acquires that found no idle connection and waited for one (the pool was saturated).", nil, nil)
	poolAcquireSeconds = prometheus.NewDesc("flux_order_postgres_pool_acquire_seconds_total",
		"Time spent acquiring connections, waits included.", nil, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolConns, poolMax, poolAcquires, poolWaits, poolAcquireSeconds} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(poolConns, prometheus.GaugeValue, float64(st.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(poolMax, prometheus.GaugeValue, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquires, prometheus.CounterValue, float64(st.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWaits, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolAcquireSeconds, prometheus.CounterValue, st.AcquireDuration().Seconds())
}
