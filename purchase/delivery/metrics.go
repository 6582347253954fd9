package delivery

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

type metrics struct {
	attempts *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	backlog  *prometheus.GaugeVec
	oldest   *prometheus.GaugeVec
	dead     *prometheus.GaugeVec

	mu   sync.Mutex
	last []WebhookCounts
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flux_order_webhook_attempts_total",
			Help: "Delivery attempts made by this pod, by webhook and outcome (delivered, 4xx, 5xx, 3xx, timeout, error, unresolved).",
		}, []string{"webhook", "outcome"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flux_order_webhook_lag_seconds",
			Help:    "From an event's commit (an order's purchasedAt) to its endpoint's 2xx, by webhook.",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400},
		}, []string{"webhook"}),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flux_order_webhook_backlog",
			Help: "Events pending for each webhook (the sale's, as counted in its database by every pod: take max).",
		}, []string{"webhook"}),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flux_order_webhook_oldest_pending_seconds",
			Help: "Age of each webhook's oldest pending event (0: none pending).",
		}, []string{"webhook"}),
		dead: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flux_order_webhook_dead",
			Help: "Events each webhook never acknowledged within the retry period (kept; see spec.delivery.redeliverDead).",
		}, []string{"webhook"}),
	}
	reg.MustRegister(m.attempts, m.lag, m.backlog, m.oldest, m.dead)
	return m
}

// WebhookCounts is one webhook's events in the database.
type WebhookCounts struct {
	Name          string
	Pending       int64
	Delivered     int64
	Dead          int64
	OldestPending time.Time // zero: none pending
	FailingSince  time.Time // zero: acknowledging (as this pod saw it)
	LastError     string
}

// Counts are the sale's deliveries per webhook of the current settings,
// from the database (every pod sees the same), with this pod's view of
// each endpoint's failing run: River's deliveries (the retries, and the
// dead), the fan-out's delivered counts, and the events not delivered by
// the fan-out yet (not claimed, or in a claim not recorded yet), pending
// for every webhook that wants their type.
//
// Everything is read in one snapshot (a REPEATABLE READ, read-only
// transaction): an event moves from "after the cursor" to "claimed" to
// "delivered" or River's in single transactions, so each event is counted
// once, in exactly one of those places, and a count never shows a state
// that did not exist (each statement in its own snapshot could count an
// event twice, or not at all, as it moved between them).
func (d *Deliverer) Counts(ctx context.Context) ([]WebhookCounts, error) {
	hooks := d.settings.Load().hooks
	by := map[string]*WebhookCounts{}
	for name := range hooks {
		by[name] = &WebhookCounts{Name: name}
	}
	var pending map[string]pendingCount
	err := pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		pending, err = d.readCounts(ctx, tx, by)
		return err
	})
	if err != nil {
		return nil, err
	}
	for typ, p := range pending {
		for name, h := range hooks {
			if w := by[name]; h.wants(typ) {
				w.Pending += p.n
				if !p.oldest.IsZero() && (w.OldestPending.IsZero() || p.oldest.Before(w.OldestPending)) {
					w.OldestPending = p.oldest
				}
			}
		}
	}
	d.mu.Lock()
	out := make([]WebhookCounts, 0, len(by))
	for name, w := range by {
		w.FailingSince, w.LastError = d.failing[name], d.lastErr[name]
		if h := hooks[name]; h.problem != "" {
			w.LastError = h.problem
		}
		out = append(out, *w)
	}
	d.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// readCounts reads, in tx's snapshot, River's deliveries and the
// fan-out's delivered counts into by, and answers the events the fan-out
// has not delivered yet, by type. Two round trips: the counts, the cursor
// and the open claims; then the events after the cursor and in each claim
// (countSQL, one statement each with the range's bounds as parameters, on
// each source's (xid, key) index: a join of webhook_claims with the events
// would not reach the index).
func (d *Deliverer) readCounts(ctx context.Context, tx pgx.Tx, by map[string]*WebhookCounts) (map[string]pendingCount, error) {
	b := &pgx.Batch{}
	// A retry's oldest pending time is its event's (args.at), as for the
	// events the fan-out still holds, not the job's creation (which stands
	// in for a job without one; every version has written it).
	b.Queue(`SELECT args->>'webhook',
			count(*) FILTER (WHERE state NOT IN ('completed', 'discarded', 'cancelled')),
			count(*) FILTER (WHERE state = 'completed'),
			count(*) FILTER (WHERE state = 'discarded'),
			min(coalesce((args->>'at')::timestamptz, created_at)) FILTER (WHERE state NOT IN ('completed', 'discarded', 'cancelled'))
		FROM river_job WHERE kind = $1 GROUP BY 1`, KindDelivery).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var c WebhookCounts
			var oldest *time.Time
			if err := rows.Scan(&c.Name, &c.Pending, &c.Delivered, &c.Dead, &oldest); err != nil {
				return err
			}
			if oldest != nil {
				c.OldestPending = *oldest
			}
			if w := by[c.Name]; w != nil {
				*w = c
			}
		}
		return rows.Err()
	})
	b.Queue(`SELECT webhook, delivered FROM webhook_delivered`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var name string
			var n int64
			if err := rows.Scan(&name, &n); err != nil {
				return err
			}
			if w := by[name]; w != nil {
				w.Delivered += n
			}
		}
		return rows.Err()
	})
	// The events after the cursor are pending only while the switch is
	// on (else they happened before any webhook, and the next OFF → ON
	// moves the cursor past them); claimed ones are pending either way:
	// their batch delivers them.
	var on bool
	var c cursor
	b.Queue(`SELECT s.enabled, w.xid::text, w.src, w.key, w.after::text FROM outbox_switch s, webhook_cursor w`).QueryRow(func(row pgx.Row) error {
		return row.Scan(&on, &c.xid, &c.src, &c.key, &c.after)
	})
	type claimRange struct{ from, to cursor }
	var claims []claimRange
	b.Queue(`SELECT from_xid::text, from_src, from_key, to_xid::text, to_src, to_key, after::text FROM webhook_claims`).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var k claimRange
			if err := rows.Scan(&k.from.xid, &k.from.src, &k.from.key, &k.to.xid, &k.to.src, &k.to.key, &k.from.after); err != nil {
				return err
			}
			claims = append(claims, k)
		}
		return rows.Err()
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}

	pending := map[string]pendingCount{}
	add := func(rows pgx.Rows) error {
		for rows.Next() {
			var typ string
			var n int64
			var oldest *time.Time
			if err := rows.Scan(&typ, &n, &oldest); err != nil {
				return err
			}
			q := pending[typ]
			q.n += n
			if oldest != nil && (q.oldest.IsZero() || oldest.Before(q.oldest)) {
				q.oldest = *oldest
			}
			pending[typ] = q
		}
		return rows.Err()
	}
	b = &pgx.Batch{}
	if on {
		q, args := countSQL(c, nil)
		b.Queue(q, args...).Query(add)
	}
	for _, k := range claims {
		q, args := countSQL(k.from, &k.to)
		b.Queue(q, args...).Query(add)
	}
	if b.Len() == 0 {
		return pending, nil
	}
	return pending, tx.SendBatch(ctx, b).Close()
}

// observe refreshes the backlog gauges every few seconds.
func (d *Deliverer) observe(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		// No webhook, nothing to count (and no query).
		if len(d.settings.Load().hooks) == 0 {
			d.metrics.set(nil)
		} else {
			if cs, err := d.Counts(ctx); err == nil {
				d.metrics.set(cs)
			}
			d.convertLegacyEvents(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// attemptOutcomes are the outcome label's values.
var attemptOutcomes = []string{"delivered", "3xx", "4xx", "5xx", "timeout", "error", "unresolved"}

// set publishes counts, dropping the series of removed webhooks.
func (m *metrics) set(cs []WebhookCounts) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, old := range m.last {
		m.backlog.DeleteLabelValues(old.Name)
		m.oldest.DeleteLabelValues(old.Name)
		m.dead.DeleteLabelValues(old.Name)
	}
	for _, c := range cs {
		// Every webhook's attempt and lag series exist from its first
		// count, at 0, so a query finds them before the first delivery.
		m.lag.WithLabelValues(c.Name)
		for _, o := range attemptOutcomes {
			m.attempts.WithLabelValues(c.Name, o)
		}
		m.backlog.WithLabelValues(c.Name).Set(float64(c.Pending))
		m.dead.WithLabelValues(c.Name).Set(float64(c.Dead))
		age := 0.0
		if !c.OldestPending.IsZero() {
			age = time.Since(c.OldestPending).Seconds()
		}
		m.oldest.WithLabelValues(c.Name).Set(age)
	}
	m.last = cs
}

// Status is status.delivery as of the last count (every 5 s; no query):
// nil while the sale has no webhooks.
func (d *Deliverer) Status() *salesv1alpha1.DeliveryStatus {
	d.metrics.mu.Lock()
	cs := d.metrics.last
	d.metrics.mu.Unlock()
	if len(cs) == 0 {
		return nil
	}
	return statusOf(cs)
}

func statusOf(cs []WebhookCounts) *salesv1alpha1.DeliveryStatus {
	st := &salesv1alpha1.DeliveryStatus{}
	var pending, dead int64
	for _, c := range cs {
		w := salesv1alpha1.WebhookDeliveryStatus{Name: c.Name, Pending: c.Pending, Delivered: c.Delivered, Dead: c.Dead, LastError: c.LastError}
		if !c.OldestPending.IsZero() {
			w.OldestPending = &metav1.Time{Time: c.OldestPending.UTC().Truncate(time.Second)}
		}
		if !c.FailingSince.IsZero() {
			w.FailingSince = &metav1.Time{Time: c.FailingSince.UTC().Truncate(time.Second)}
		}
		if len(w.LastError) > 256 {
			w.LastError = w.LastError[:256]
		}
		st.Webhooks = append(st.Webhooks, w)
		pending += c.Pending
		dead += c.Dead
	}
	st.Summary = "ok"
	if pending > 0 {
		st.Summary = fmt.Sprintf("%d pending", pending)
	}
	if dead > 0 {
		st.Summary += fmt.Sprintf(", %d dead", dead)
	}
	return st
}
