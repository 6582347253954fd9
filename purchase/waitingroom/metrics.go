package waitingroom

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the waiting room's series (its answers are counted by
// httpapi). The queue's size and progress
// are gauges read from the pod's view at scrape time (no cost per request).
type metrics struct {
	joinBatches  prometheus.Histogram // buyers per join statement
	admittedHere prometheus.Counter   // buyers this pod admitted as the admitter
	admitting    prometheus.Gauge     // 1 while this pod is the admitter
	heldBack     prometheus.Gauge     // 1 while the admitter holds back on purpose (no room)
	proofs       prometheus.Counter   // proofs of work accepted (one join each)
}

func newMetrics(reg prometheus.Registerer, q *Room) *metrics {
	m := &metrics{
		joinBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "flux_order_queue_join_batch_size",
			Help:    "Buyers written per join statement (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		admittedHere: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_order_queue_admitted_by_pod_total",
			Help: "Buyers this pod admitted while it was the admitter.",
		}),
		proofs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flux_order_queue_proofs_total",
			Help: "Proofs of work accepted on join (spec.waitingRoom.proofOfWork); refusals are flux_order_queue_joins_total{outcome=\"proof_required\"|\"proof_invalid\"}.",
		}),
		admitting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flux_order_queue_admitter",
			Help: "1 while this pod is the sale's admitter.",
		}),
		heldBack: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flux_order_queue_held_back",
			Help: "1 while this pod is the admitter and admits nobody on purpose: the active buyers could take every seat left, or maxActiveBuyers are shopping (FluxOrderQueueStalled stays silent).",
		}),
	}
	fromView := func(name, help string, f func(*queueView) float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if v := q.view.Load(); v != nil {
				return f(v)
			}
			return 0
		})
	}
	reg.MustRegister(m.joinBatches, m.admittedHere, m.admitting, m.heldBack, m.proofs,
		fromView("flux_order_queue_waiting", "Buyers waiting behind the serving position (counted every second).",
			func(v *queueView) float64 { return float64(v.state.Waiting) }),
		fromView("flux_order_queue_admitted", "Buyers admitted since the queue opened.",
			func(v *queueView) float64 { return float64(v.state.Admitted) }),
		fromView("flux_order_queue_serving_position", "The serving position: every place up to it is admitted.",
			func(v *queueView) float64 { return float64(v.state.ServingSlot) }),
		fromView("flux_order_queue_view_age_seconds", "Age of this pod's view of the queue (refreshed every 200 ms).",
			func(v *queueView) float64 { return time.Since(v.at).Seconds() }),
	)
	return m
}
