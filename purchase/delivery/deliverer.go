// Package delivery hands the sale's events to its webhooks (issue 19,
// docs/delivery.md): the transactional outbox is the facts themselves
// (each order, cancellation and sale moment row carries its transaction's
// xid8: orderstore's *_outbox_cursor.sql), which the pods fan out behind
// one cursor in leased batches (outbox.go), making each delivery's first attempt
// themselves; every pod runs a River client on the retries, each leased
// by one pod at a time.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
)

// Config is one pod's deliverer.
type Config struct {
	// File is the operator's resolved webhooks (--webhooks-file); missing:
	// no webhooks.
	File string
	// Schedule is the retry schedule (DefaultSchedule(time.Second)).
	Schedule Schedule
	// AttemptTimeout bounds one POST (default 10s); longer is a failure.
	AttemptTimeout time.Duration
	// Workers is how many deliveries one fan-out batch makes at once
	// (default 64; a pod has fanOutLoops batches in flight at most), and
	// River's workers on the retries (each fetch takes up to this many,
	// at most every 10 ms: the rate at which a backlog drains).
	Workers int
	// PollInterval is how often the pod looks for new events (default
	// 100ms: events are not announced with NOTIFY, see the webhook outbox migration).
	PollInterval time.Duration
	// RescueAfter: a delivery a pod started and never finished (the pod
	// was killed) is retried after this long (default 2 min; River's
	// rescuer looks every 30 s).
	RescueAfter time.Duration
	// Retention of delivered and dead events' rows (default 30 days: the
	// counts of status.delivery, and the dead events that
	// spec.delivery.redeliverDead can bring back).
	Retention time.Duration
	// ID names this pod in River's leases ("" : River's own).
	ID string
	// FollowInterval: how often the file is re-read and the outbox's
	// switch set from it (default 5s).
	FollowInterval time.Duration
	// OutboxOffAfter: the outbox's switch goes off when no pod has seen a
	// webhook for this long (default 30s; outboxswitch.go).
	OutboxOffAfter time.Duration
	// Sale names the sale in its own events' data and ids.
	Sale string
	// NoInline leaves every attempt to River's workers: the fan-out makes
	// no first attempt itself (measurements and tests of River's path).
	NoInline bool
	// Facts, when set, makes the pod record the sale's own events
	// (sale.on_sale, sale.sold_out, sale.ended), checked every second.
	Facts func(context.Context) (SaleFacts, error)
}

func (c Config) withDefaults() Config {
	if c.Schedule == (Schedule{}) {
		c.Schedule = DefaultSchedule(time.Second)
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 10 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = 64
	}
	if c.PollInterval == 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.RescueAfter == 0 {
		c.RescueAfter = 2 * time.Minute
	}
	if c.Retention == 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.FollowInterval == 0 {
		c.FollowInterval = 5 * time.Second
	}
	if c.OutboxOffAfter == 0 {
		c.OutboxOffAfter = 30 * time.Second
	}
	return c
}

// Deliverer is one pod's share of the sale's deliveries.
type Deliverer struct {
	cfg      Config
	pool     *pgxpool.Pool
	client   *river.Client[pgx.Tx]
	settings atomic.Pointer[settings]
	// switchOn is the outbox's switch as this pod last read or set it.
	switchOn atomic.Bool
	metrics  *metrics
	log      *slog.Logger
	// failing is when each webhook's current run of failures began, as
	// this pod saw it (zero: it acknowledges).
	mu      sync.Mutex
	failing map[string]time.Time
	lastErr map[string]string
	// lastOK is each webhook's last 2xx as this pod saw it: an attempt
	// that started before it and failed (a straggler of the outage) is
	// retried at once, not after its backoff, since the pull may have
	// passed it by while it ran.
	lastOK map[string]time.Time
	// runCtx is Run's: the pod's delivery, until it stops.
	runCtx context.Context
	// draining: the pod got SIGTERM (Drain); its loops claim no new batch
	// and its batches in flight start no new attempt.
	draining atomic.Bool
	// claimMu: one of this pod's fan-out loops at a time claims.
	claimMu sync.Mutex
	// conns: every webhook client's connections, closed when the pod stops.
	conns *connSet
	// idle: while the outbox is idle one fan-out loop polls (outbox.go).
	idle idlePoll
}

// Drain starts the pod's stop: no new fan-out batch, and the batches in
// flight hand their attempts not yet started to River, so they record
// within one attempt timeout, well inside the pod's grace period (a batch
// cut off by SIGKILL would be sent again by another pod after its lease).
func (d *Deliverer) Drain() { d.draining.Store(true) }

// New makes the deliverer of the sale whose database pool holds River's
// tables (Store.Migrate made them), in schema ("" for the default).
func New(cfg Config, pool *pgxpool.Pool, schema string, reg prometheus.Registerer, log *slog.Logger) (*Deliverer, error) {
	cfg = cfg.withDefaults()
	d := &Deliverer{cfg: cfg, pool: pool, log: log.With("component", "delivery"),
		failing: map[string]time.Time{}, lastErr: map[string]string{}, lastOK: map[string]time.Time{}, runCtx: context.Background(),
		conns: newConnSet()}
	s, err := loadSettings(cfg.File, cfg.AttemptTimeout, cfg.Workers, d.conns)
	if err != nil {
		return nil, err
	}
	d.settings.Store(s)
	d.logProblems(s)
	d.metrics = newMetrics(reg)

	workers := river.NewWorkers()
	river.AddWorker(workers, &deliver{d: d})
	d.client, err = river.NewClient(riverpgxv5.New(pool), &river.Config{
		ID:                          cfg.ID,
		Schema:                      schema,
		Queues:                      map[string]river.QueueConfig{Queue: {MaxWorkers: cfg.Workers}},
		Workers:                     workers,
		FetchPollInterval:           cfg.PollInterval,
		FetchCooldown:               min(cfg.PollInterval, 10*time.Millisecond),
		JobTimeout:                  cfg.AttemptTimeout + 5*time.Second,
		RescueStuckJobsAfter:        max(cfg.RescueAfter, cfg.AttemptTimeout+10*time.Second),
		CompletedJobRetentionPeriod: cfg.Retention,
		DiscardedJobRetentionPeriod: cfg.Retention,
		CancelledJobRetentionPeriod: 24 * time.Hour,
		MaxAttempts:                 cfg.Schedule.Attempts(),
		// Events of the previous version's outbox (flux_order_event) have
		// no River worker: fanned out by that version, or converted
		// (convertLegacyEvents).
		SkipUnknownJobCheck: true,
		Logger:              d.log.With("component", "river"),
	})
	if err != nil {
		return nil, fmt.Errorf("river client: %w", err)
	}
	return d, nil
}

// Run delivers until ctx ends, then stops: deliveries in flight are
// cancelled (each is retried, by this pod or another; a receiver may get
// one of them twice, with the same webhook-id).
func (d *Deliverer) Run(ctx context.Context) error {
	d.runCtx = ctx
	// River's client runs whether or not the sale has a webhook: it only
	// works the retries (an idle fetch every PollInterval), and stopping
	// and restarting it with the file is more machinery than it saves.
	if err := d.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start river: %w", err)
	}
	// The switch first, so that the sale's own events of this start
	// follow it.
	d.setSwitch(ctx)
	d.redeliver(ctx, d.settings.Load().redeliverDead)
	go d.follow(ctx, d.cfg.FollowInterval)
	go d.observe(ctx)
	var fanning sync.WaitGroup
	for range fanOutLoops {
		fanning.Go(func() { d.fanOut(ctx) })
	}
	if d.cfg.Facts != nil {
		go d.saleEvents(ctx, time.Second)
	}
	<-ctx.Done()
	fanning.Wait() // the batches in flight end first (fanOutOnce)
	// Then River's attempts in flight end at once, as net/http's did on
	// their cancelled context: they record as failed, retried by any pod.
	d.conns.close()
	stop, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d.client.StopAndCancel(stop)
}

// deliveryJob is an event's delivery to one webhook as a River job, due
// now: River makes its attempts and follows the schedule.
func (d *Deliverer) deliveryJob(a DeliveryArgs) river.InsertManyParams {
	return river.InsertManyParams{Args: a, InsertOpts: &river.InsertOpts{Queue: Queue, MaxAttempts: d.cfg.Schedule.Attempts()}}
}

// attempt is a first attempt the fan-out makes itself.
type attempt struct {
	hook  *webhook
	args  DeliveryArgs
	start time.Time
	ok    bool
	err   error
	// deferred: not attempted, its endpoint began failing meanwhile.
	deferred bool
}

// attemptOne makes one first attempt of the fan-out.
func (d *Deliverer) attemptOne(ctx context.Context, a *attempt, startBy time.Time) {
	// The endpoint began failing while this batch ran, or the batch has
	// run for startBy already (a slow endpoint): the rest of its
	// deliveries go to River unattempted, so the batch ends within two
	// attempt timeouts, not one per round of Workers.
	if !d.inlineFor(a.args.Webhook, a.hook) || time.Now().After(startBy) || d.draining.Load() {
		a.deferred = true
		return
	}
	a.start = time.Now()
	outcome, err := d.post(ctx, a.hook, a.args)
	if err != nil {
		a.err = err
		d.failed(a.args.Webhook, outcome, err.Error(), a.start)
		return
	}
	a.ok = true
	d.metrics.attempts.WithLabelValues(a.args.Webhook, "delivered").Inc()
	d.metrics.lag.WithLabelValues(a.args.Webhook).Observe(time.Since(a.args.At).Seconds())
	if d.recovered(a.args.Webhook) {
		go d.pullForwardRepeatedly(d.runCtx, a.args.Webhook)
	}
}

// inlineFor says whether the fan-out makes an event's first attempt to
// this webhook itself: when it can be delivered to and this pod has not
// seen it failing (a failing endpoint's events go to River at once, which
// retries them on the schedule and pulls them forward when it recovers).
func (d *Deliverer) inlineFor(name string, h *webhook) bool {
	if h.problem != "" || d.cfg.NoInline {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.failing[name].IsZero()
}

// attemptInline makes the first attempts of a fan-out batch, at most
// Workers at once, and splits them into the delivered, the failed and the
// deferred (not attempted: their endpoint failed meanwhile).
func (d *Deliverer) attemptInline(ctx context.Context, as []*attempt, startBy time.Time) (delivered, failed, deferred []*attempt) {
	if len(as) == 0 {
		return nil, nil, nil
	}
	// A fixed set of workers, not a goroutine per attempt: each new
	// goroutine grows its stack through the HTTP client's depth (3 % of
	// the pod's CPU in the delivery step's profile, on net/http).
	work := make(chan *attempt)
	var wg sync.WaitGroup
	for range min(d.cfg.Workers, len(as)) {
		wg.Go(func() {
			for a := range work {
				d.attemptOne(ctx, a, startBy)
			}
		})
	}
	for _, a := range as {
		work <- a
	}
	close(work)
	wg.Wait()
	for _, a := range as {
		switch {
		case a.ok:
			delivered = append(delivered, a)
		case a.deferred:
			deferred = append(deferred, a)
		default:
			failed = append(failed, a)
		}
	}
	return delivered, failed, deferred
}

// insertFailed hands the deliveries whose first attempt failed to River
// as jobs that made that attempt (attempt 1, its error, due after the
// schedule's first wait), so every event gets the schedule's attempts, no
// more. Pulled forward like River's own when the endpoint recovers.
func (d *Deliverer) insertFailed(ctx context.Context, tx pgx.Tx, as []*attempt) error {
	args := make([][]byte, len(as))
	at := make([]time.Time, len(as))
	due := make([]time.Time, len(as))
	errs := make([][]byte, len(as))
	for i, a := range as {
		raw, err := json.Marshal(a.args)
		if err != nil {
			return err
		}
		e, err := json.Marshal(rivertype.AttemptError{At: time.Now().UTC(), Attempt: 1, Error: a.err.Error()})
		if err != nil {
			return err
		}
		args[i], at[i], due[i], errs[i] = raw, a.start, time.Now().Add(d.cfg.Schedule.Wait(1)), e
	}
	_, err := tx.Exec(ctx, `INSERT INTO river_job (args, kind, queue, max_attempts, state, attempt, attempted_at, attempted_by, scheduled_at, errors)
		SELECT a, $5, $6, $7, 'available', 1, t, ARRAY[$8::text], s, ARRAY[e]
		FROM unnest($1::jsonb[], $2::timestamptz[], $3::timestamptz[], $4::jsonb[]) AS u(a, t, s, e)`,
		args, at, due, errs, KindDelivery, Queue, d.cfg.Schedule.Attempts(), d.client.ID())
	return err
}

// deliver makes one attempt to hand an event to a webhook.
type deliver struct {
	river.WorkerDefaults[DeliveryArgs]
	d *Deliverer
}

// NextRetry is the schedule's wait after this failed attempt, or one
// unit when the endpoint acknowledged another delivery since this attempt
// began.
func (w *deliver) NextRetry(job *river.Job[DeliveryArgs]) time.Time {
	if job.AttemptedAt != nil && w.d.okSince(job.Args.Webhook, *job.AttemptedAt) {
		return time.Now().Add(w.d.cfg.Schedule.Unit)
	}
	return time.Now().Add(w.d.cfg.Schedule.Wait(job.Attempt))
}

// Timeout bounds the attempt (the HTTP client's own timeout is shorter).
func (w *deliver) Timeout(*river.Job[DeliveryArgs]) time.Duration {
	return w.d.cfg.AttemptTimeout + 5*time.Second
}

func (w *deliver) Work(ctx context.Context, job *river.Job[DeliveryArgs]) error {
	d := w.d
	a := job.Args
	h := d.settings.Load().hooks[a.Webhook]
	if h == nil {
		// Removed from spec.delivery: nobody to deliver to any more.
		return river.JobCancel(fmt.Errorf("webhook %s was removed", a.Webhook))
	}
	if h.problem != "" {
		d.failed(a.Webhook, "unresolved", h.problem, time.Now())
		return errors.New(h.problem)
	}
	start := time.Now()
	outcome, err := d.post(ctx, h, a)
	if err != nil {
		d.failed(a.Webhook, outcome, err.Error(), start)
		return err
	}
	d.metrics.attempts.WithLabelValues(a.Webhook, "delivered").Inc()
	d.metrics.lag.WithLabelValues(a.Webhook).Observe(time.Since(a.At).Seconds())
	if d.recovered(a.Webhook) {
		go d.pullForwardRepeatedly(d.runCtx, a.Webhook)
	}
	return nil
}

// failed counts a failed attempt and starts the webhook's failing run,
// unless the endpoint acknowledged another delivery since the attempt
// began.
func (d *Deliverer) failed(webhook, outcome, msg string, began time.Time) {
	d.metrics.attempts.WithLabelValues(webhook, outcome).Inc()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastErr[webhook] = msg
	if d.failing[webhook].IsZero() && !d.lastOK[webhook].After(began) {
		d.failing[webhook] = time.Now()
	}
}

// recovered ends the webhook's failing run; true when there was one.
func (d *Deliverer) recovered(webhook string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	was := !d.failing[webhook].IsZero()
	delete(d.failing, webhook)
	d.lastOK[webhook] = time.Now()
	return was
}

func (d *Deliverer) okSince(webhook string, t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastOK[webhook].After(t)
}

// pullForward makes a webhook's waiting retries due now: it acknowledged
// again, so its backlog drains at full speed instead of waiting out each
// event's backoff.
func (d *Deliverer) pullForward(ctx context.Context, webhook string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tag, err := d.pool.Exec(ctx, `UPDATE river_job SET state = 'available', scheduled_at = now()
		WHERE kind = $1 AND state IN ('retryable', 'available') AND scheduled_at > now() AND args @> jsonb_build_object('webhook', $2::text)`,
		KindDelivery, webhook)
	if err != nil {
		d.log.Warn("pull the pending deliveries forward", "webhook", webhook, "err", err)
		return
	}
	if tag.RowsAffected() > 0 {
		d.log.Info("webhook acknowledges again: its pending deliveries are due now", "webhook", webhook, "pulled", tag.RowsAffected())
	}
}

// pullForwardRepeatedly pulls now, and again as the attempts that were
// in flight when the endpoint came back record their failures (each
// within AttemptTimeout): those were running, so the first pull passed
// them by, and they would otherwise wait out a full backoff.
func (d *Deliverer) pullForwardRepeatedly(ctx context.Context, webhook string) {
	d.pullForward(ctx, webhook)
	for _, after := range []time.Duration{250 * time.Millisecond, time.Second, d.cfg.AttemptTimeout + time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(after):
		}
		d.pullForward(ctx, webhook)
	}
}

// redeliver moves the dead deliveries back to pending once per token of
// spec.delivery.redeliverDead (the first pod to see the token does it).
func (d *Deliverer) redeliver(ctx context.Context, token string) {
	if token == "" {
		return
	}
	var moved int64
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO webhook_redeliveries (token, moved) VALUES ($1, 0) ON CONFLICT (token) DO NOTHING`, token)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		tag, err = tx.Exec(ctx, `UPDATE river_job SET state = 'available', attempt = 0, scheduled_at = now(), finalized_at = NULL
			WHERE kind = $1 AND state = 'discarded'`, KindDelivery)
		if err != nil {
			return err
		}
		moved = tag.RowsAffected()
		_, err = tx.Exec(ctx, `UPDATE webhook_redeliveries SET moved = $2 WHERE token = $1`, token, moved)
		return err
	})
	if err != nil {
		d.log.Warn("redeliver the dead events", "token", token, "err", err)
		return
	}
	if moved > 0 {
		d.log.Info("dead events moved back to pending", "token", token, "events", moved)
	}
}
