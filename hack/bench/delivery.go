package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/loadtest"
	"github.com/flux-order/flux-order/purchase/delivery"
)

// The rows of issue 19 (webhook delivery, docs/delivery.md): the same
// sell-out with no webhook and with one webhook to the reference receiver
// (`flux-order receive`, its own process), in the same run; the delivery
// lag the receiver measured; and the backlog drain after the receiver
// answered 503 for the first part of a sell-out.

var deliverySeats = flag.Int64("delivery-seats", 30_000, "seats of each sell-out of the delivery step (off, on, drain)")

// benchWebhookSecret signs the bench's deliveries (any whsec_ of 32 bytes).
const benchWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// receiverStats is the receiver's GET /stats (cmd/receive.go).
type receiverStats struct {
	delivery.Report
	RecoveredAt time.Time `json:"recoveredAt"`
}

// deliveryRun is one sell-out of the delivery step.
type deliveryRun struct {
	orders    int
	seconds   float64 // the sell-out's duration, as the load client measured it
	rate      float64 // confirmed orders/s
	recv      receiverStats
	backlog   int64   // drain: orders committed before the receiver recovered
	drainRate float64 // drain: order events kept / (last kept − recovery)
	// CPU per order (µs) from the load's start until the sell-out ended
	// (off) or until every order was delivered (on): the pod, PostgreSQL
	// and Redis together, and the receiver apart.
	serverCPU, receiverCPU float64
	podCPU, pgCPU          float64 // the pod's and PostgreSQL's shares of serverCPU
	// batch is the pod's mean purchase batch: PostgreSQL's CPU per order
	// falls steeply as batches grow, and a busier machine makes them grow.
	batch float64
}

func (b *bench) delivery(ctx context.Context) error {
	var off, on, onLag, onP50, drain, drainRatio, backlog, cpuOff, cpuOn, cpuRecv []float64
	dups := 0
	for i := range *runs {
		// Each sell-out starts from the same PostgreSQL: the earlier runs'
		// databases dropped and their writes checkpointed, so that their
		// background work (checkpoints, autovacuum: up to 60 µs per order)
		// is not billed to whichever sell-out comes next.
		if err := b.settle(ctx); err != nil {
			return err
		}
		o, err := b.deliverySellOut(ctx, "off", 0, false)
		if err != nil {
			return err
		}
		if err := b.settle(ctx); err != nil {
			return err
		}
		// -profile goes to the delivery step's first "on" sell-out when the
		// flux-order step, which profiles its own, is not run.
		prof := i == 0 && *profile != "" && *only != "" && !slices.Contains(strings.Split(*only, ","), "flux-order")
		n, err := b.deliverySellOut(ctx, "on", 0, prof)
		if err != nil {
			return err
		}
		if err := b.settle(ctx); err != nil {
			return err
		}
		// The outage covers about the first half of the sell-out (its
		// length in the "off" run), counted from the first delivery (the
		// sale.on_sale event, as the pod starts).
		fail := max(time.Second, time.Duration(o.seconds/2*float64(time.Second))).Round(100 * time.Millisecond)
		d, err := b.deliverySellOut(ctx, "drain", fail, false)
		if err != nil {
			return err
		}
		off, on = append(off, o.rate), append(on, n.rate)
		onLag, onP50 = append(onLag, n.recv.Lag.P99), append(onP50, n.recv.Lag.P50)
		drain, drainRatio = append(drain, d.drainRate), append(drainRatio, d.drainRate/d.rate)
		backlog = append(backlog, float64(d.backlog))
		cpuOff, cpuOn, cpuRecv = append(cpuOff, o.serverCPU), append(cpuOn, n.serverCPU), append(cpuRecv, n.receiverCPU)
		dups += n.recv.Duplicates + d.recv.Duplicates
		fmt.Fprintf(os.Stderr, "bench: delivery run %d: off %.0f orders/s; on %.0f orders/s (%.2f ×), lag p50 %.3f s p99 %.3f s max %.3f s; "+
			"CPU per order (pod + PostgreSQL + Redis) %.0f µs off (pod %.0f, PostgreSQL %.0f, mean batch %.1f), %.0f µs on (pod %.0f, PostgreSQL %.0f, mean batch %.1f), receiver %.0f µs; drain: %s outage, %d orders pending at recovery, %d delivered in %.1f s after it = %.0f events/s against the sale's %.0f orders/s (%.2f ×)\n",
			i+1, o.rate, n.rate, n.rate/o.rate, n.recv.Lag.P50, n.recv.Lag.P99, n.recv.Lag.Max,
			o.serverCPU, o.podCPU, o.pgCPU, o.batch, n.serverCPU, n.podCPU, n.pgCPU, n.batch, n.receiverCPU, fail, d.backlog, d.recv.Orders, float64(d.recv.Orders)/d.drainRate, d.drainRate, d.rate, d.drainRate/d.rate)
	}
	offS, onS := statOf(off), statOf(on)
	seats := *deliverySeats
	b.addStat(row{group: "delivery", what: fmt.Sprintf("sell-out of %d seats, no webhook (nothing fanned out: the outbox's switch is off): confirmed orders", seats), unit: "orders/s"}, offS)
	b.addStat(row{group: "delivery", what: fmt.Sprintf("sell-out of %d seats, one webhook to `flux-order receive` answering 2xx", seats), unit: "orders/s",
		ceiling: offS.med, target: "≥ 0.9 × no webhook", ok: atLeast(onS.med, offS.med, 0.9)}, onS)
	lag := statOf(onLag)
	lagOK := lag.med <= 1
	b.addStat(row{group: "delivery", what: "delivery lag p99: purchasedAt → the receiver's 2xx, during that sell-out", unit: "s",
		target: "≤ 1 s", ok: &lagOK}, lag)
	b.addStat(row{group: "delivery", what: "delivery lag p50, same", unit: "s"}, statOf(onP50))
	offCPU := statOf(cpuOff)
	b.addStat(row{group: "delivery", what: "CPU per order, no webhook: pod + PostgreSQL + Redis, from the load's start to the sell-out's end (/proc)", unit: "µs"}, offCPU)
	b.addStat(row{group: "delivery", what: "CPU per order, one webhook: pod + PostgreSQL + Redis, to the last delivery (ratio: the cost of delivering, noise-proof where orders/s is not)", unit: "µs",
		ceiling: offCPU.med}, statOf(cpuOn))
	b.addStat(row{group: "delivery", what: "CPU per order of the receiver (its own process: HTTP, verification, JSON)", unit: "µs"}, statOf(cpuRecv))
	b.addStat(row{group: "delivery", what: "backlog: orders pending when the receiver recovered (503 for the first half of a sell-out)", unit: "orders"}, statOf(backlog))
	ratio := statOf(drainRatio)
	drainOK := ratio.med >= 1
	b.addStat(row{group: "delivery", what: "backlog drain: order events delivered from recovery until none pending / that time", unit: "events/s",
		target: "≥ 1 × the sale's confirmation rate (same run)", ok: &drainOK}, statOf(drain))
	b.addStat(row{group: "delivery", what: "backlog drain / the sale's confirmation rate, per run", unit: "×"}, ratio)
	b.add(row{group: "delivery", what: "every order delivered (distinct webhook-ids = orders in PostgreSQL, no delivery pending); duplicates over all runs",
		unit: "duplicates", value: float64(dups)})
	return nil
}

// deliverySellOut sells out a fresh sale of -delivery-seats from one
// `flux-order purchase`: mode "off" with no webhook, "on" with one webhook
// to a `flux-order receive` answering 2xx, "drain" with the receiver
// answering 503 for failFor first. With a webhook it waits until every
// order is delivered and checks the receiver and River's table against
// PostgreSQL's orders.
func (b *bench) deliverySellOut(ctx context.Context, mode string, failFor time.Duration, prof bool) (deliveryRun, error) {
	db, err := b.database(ctx)
	if err != nil {
		return deliveryRun{}, err
	}
	sale := fmt.Sprintf("delivery-%d", b.dbSeq)
	file := filepath.Join(b.bin, sale+"-webhooks.json")
	hooks := salesv1alpha1.WebhooksFile{Webhooks: []salesv1alpha1.ResolvedWebhook{}}
	var recv *proc
	if mode != "off" {
		args := []string{"receive", "--signing-secret", benchWebhookSecret}
		if failFor > 0 {
			args = append(args, "--fail-for", failFor.String())
		}
		if recv, err = b.launch(ctx, "flux-order", args); err != nil {
			return deliveryRun{}, err
		}
		defer recv.stop()
		hooks.Webhooks = append(hooks.Webhooks, salesv1alpha1.ResolvedWebhook{Name: "bench", URL: recv.url + "/hooks",
			SigningSecrets: []string{benchWebhookSecret}, InsecureHTTP: true,
			Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed, salesv1alpha1.EventSaleOnSale, salesv1alpha1.EventSaleSoldOut, salesv1alpha1.EventSaleEnded}})
	}
	raw, err := json.Marshal(hooks)
	if err != nil {
		return deliveryRun{}, err
	}
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		return deliveryRun{}, err
	}
	port, err := testservers.FreePort()
	if err != nil {
		return deliveryRun{}, err
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	podArgs := []string{"purchase", "--sale-secret", benchSecret, "--sale", sale, "--tickets", strconv.FormatInt(*deliverySeats, 10),
		"--redis-addr", b.redis.Addr, "--metrics-listen", metrics, "--database-url", db, "--webhooks-file", file}
	if prof {
		podArgs = append(podArgs, "--pprof")
	}
	p, err := b.launch(ctx, "flux-order", podArgs)
	if err != nil {
		return deliveryRun{}, err
	}
	defer p.stop()
	auditor, err := loadtest.NewAuditor(ctx, db)
	if err != nil {
		return deliveryRun{}, err
	}
	var prf *profiling
	if prof {
		if prf, err = b.startProfiling(ctx, p.pid, "http://"+metrics, db); err != nil {
			return deliveryRun{}, err
		}
	}
	pgPid, err := postmasterPid(ctx, db)
	if err != nil {
		return deliveryRun{}, err
	}
	redis, err := redisPid(ctx, b.redis.Addr)
	if err != nil {
		return deliveryRun{}, err
	}
	groups := []procGroup{
		{name: "pod", has: func(pid, _ int) bool { return pid == p.pid }},
		{name: "PostgreSQL", has: func(pid, ppid int) bool { return pid == pgPid || ppid == pgPid }},
		{name: "Redis", has: func(pid, _ int) bool { return pid == redis }},
	}
	if recv != nil {
		groups = append(groups, procGroup{name: "receiver", has: func(pid, _ int) bool { return pid == recv.pid }})
	}
	sampler := startSampler(groups)
	var podCPU, pgCPU float64
	cpu := func(orders int) (server, receiver float64) {
		u := sampler.stop()
		podCPU, pgCPU = 1e6*u.groups[0].seconds/float64(orders), 1e6*u.groups[1].seconds/float64(orders)
		for i, g := range u.groups {
			if i < 3 {
				server += g.seconds
			} else {
				receiver += g.seconds
			}
		}
		return 1e6 * server / float64(orders), 1e6 * receiver / float64(orders)
	}
	res, err := load(ctx, loadtest.Config{URL: p.url, Scenario: loadtest.SellOut, Seats: *deliverySeats, Buyers: 100_000,
		Concurrency: 64, Duration: 15 * *duration, UntilSoldOut: true})
	if prf != nil {
		if perr := prf.finish(res); err == nil {
			err = perr
		}
	}
	if err != nil {
		sampler.stop()
		return deliveryRun{}, err
	}
	out := deliveryRun{orders: len(res.Created), seconds: sellingSeconds(res.Summary)}
	out.rate = float64(out.orders) / out.seconds
	if recv == nil {
		out.serverCPU, _ = cpu(out.orders)
	} else {
		out.recv, err = b.delivered(ctx, db, recv.url, out.orders)
		out.serverCPU, out.receiverCPU = cpu(out.orders)
		if err != nil {
			return deliveryRun{}, fmt.Errorf("delivery %s: %w", mode, err)
		}
	}
	out.podCPU, out.pgCPU = podCPU, pgCPU
	if sum, n, err := histogramSum("http://"+metrics+"/metrics", "flux_order_confirm_batch_size", `kind="purchase"`); err == nil && n > 0 {
		out.batch = sum / n
	}
	report := auditor.Check(ctx, res.Created, func(ctx context.Context) (loadtest.Availability, error) {
		return loadtest.FetchAvailability(ctx, loadtest.Config{URL: p.url})
	}, true)
	if !report.OK {
		return deliveryRun{}, fmt.Errorf("delivery %s: sell-out audit failed: %+v", mode, report)
	}
	if failFor > 0 {
		if out.recv.RecoveredAt.IsZero() || !out.recv.LastKept.After(out.recv.RecoveredAt) {
			return deliveryRun{}, fmt.Errorf("delivery %s: the receiver's outage did not end before its last event: %+v", mode, out.recv)
		}
		if out.backlog, err = queryInt(ctx, db, `SELECT count(*) FROM orders WHERE purchased_at < $1`, out.recv.RecoveredAt); err != nil {
			return deliveryRun{}, err
		}
		out.drainRate = float64(out.recv.Orders) / out.recv.LastKept.Sub(out.recv.RecoveredAt).Seconds()
	}
	return out, nil
}

// delivered waits until the receiver at url has kept one order event per
// order (at most 5 minutes) and River has no delivery left to make, then
// checks both against PostgreSQL: distinct webhook-ids = orders, no bad
// signature.
func (b *bench) delivered(ctx context.Context, db, url string, orders int) (receiverStats, error) {
	var st receiverStats
	err := testservers.Eventually(nil, 5*time.Minute, 50*time.Millisecond, "every order delivered", func() error {
		resp, err := http.Get(url + "/stats")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		st = receiverStats{}
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return err
		}
		if st.Orders < orders {
			return fmt.Errorf("the receiver has %d of %d orders", st.Orders, orders)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	err = testservers.Eventually(nil, time.Minute, 100*time.Millisecond, "no delivery pending", func() error {
		n, err := queryInt(ctx, db, `SELECT count(*) FROM river_job WHERE kind = $1 AND state <> 'completed'`, delivery.KindDelivery)
		if err == nil && n > 0 {
			err = fmt.Errorf("%d deliveries not completed", n)
		}
		return err
	})
	if err != nil {
		return st, err
	}
	inDB, err := queryInt(ctx, db, `SELECT count(*) FROM orders`)
	if err != nil {
		return st, err
	}
	if int64(st.Orders) != inDB || inDB != int64(orders) || st.BadSignatures != 0 {
		return st, fmt.Errorf("audit: the receiver kept %d distinct order events (%d bad signatures), PostgreSQL has %d orders, the client saw %d 201s",
			st.Orders, st.BadSignatures, inDB, orders)
	}
	return st, nil
}

func queryInt(ctx context.Context, db, sql string, args ...any) (int64, error) {
	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}
