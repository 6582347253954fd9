package checkout

import "github.com/prometheus/client_golang/prometheus"

// metrics are the seat lock's and the sales' series. Every series is
// resolved once: the hot path must not hash label values.
type metrics struct {
	sold prometheus.Counter // seats sold (orders confirmed) by this pod
	// cancelled counts the orders this pod cancelled (first calls only).
	cancelled prometheus.Counter

	lockAcquired, lockHeld, lockSold, lockKnownSold, lockKnownHeld, lockError prometheus.Counter
	lockOnHold, lockKnownOnHold                                               prometheus.Counter
	// knownLimited counts purchases refused from the pod's memory of
	// buyers at the limit (no Redis, no Postgres).
	knownLimited prometheus.Counter
	// fenceSold and fenceHeld count Postgres refusing a seat whose Redis
	// lock this pod had taken: the lock expired while its holder worked,
	// or Redis lost the seat's marker (docs/runbooks.md#fluxorderfencerefusals).
	fenceSold, fenceHeld prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	locks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_order_lock_attempts_total",
		Help: "Seat lock attempts by result: acquired, held, on_hold (a checkout hold), sold, known_sold, known_held, known_on_hold and known_limited (refused from this pod's memory), error.",
	}, []string{"result"})
	fence := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flux_order_fence_refusals_total",
		Help: "Seats Postgres refused although this pod held their Redis lock, by what Postgres found (sold, held): a lock expired mid-purchase or Redis lost data.",
	}, []string{"found"})
	m := &metrics{
		fenceSold: fence.WithLabelValues("sold"),
		fenceHeld: fence.WithLabelValues("held"),
		sold: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_order_seats_sold_total",
			Help: "Seats sold (orders confirmed) by this pod.",
		}),
		cancelled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_order_orders_cancelled_total",
			Help: "Orders cancelled through this pod's admin endpoint (a repeat of a cancellation is not counted).",
		}),
		lockAcquired:    locks.WithLabelValues("acquired"),
		lockHeld:        locks.WithLabelValues("held"),
		lockSold:        locks.WithLabelValues("sold"),
		lockKnownSold:   locks.WithLabelValues("known_sold"),
		lockKnownHeld:   locks.WithLabelValues("known_held"),
		lockError:       locks.WithLabelValues("error"),
		lockOnHold:      locks.WithLabelValues("on_hold"),
		lockKnownOnHold: locks.WithLabelValues("known_on_hold"),
		knownLimited:    locks.WithLabelValues("known_limited"),
	}
	reg.MustRegister(locks, m.sold, m.cancelled, fence)
	return m
}
