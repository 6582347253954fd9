package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/flux-order/flux-order/loadtest"
)

// The rows of issue 18 (group commit) beside the sell-out: the pods' mean
// batch and the ceiling it sets (pgbench running the batched statement at
// that size), a checkout (hold + confirm) and the p50 of a 201 with one
// connection, against the same with one commit per order (--confirm-batch-max
// 1) in the same run.

// ceilingSeats is the inventory of the batched pgbench's database: it
// seeds in a few seconds, and its seats are walked without repeat, so
// every member of every batch finds its seat free until this many orders.
const ceilingSeats = 1_000_000

// groupCommit adds the rows that read the sell-out's batches (batchSum /
// batchCount, from the pods' flux_order_confirm_batch_size{kind="purchase"})
// and the checkout and one-connection rows.
func (b *bench) groupCommit(ctx context.Context, orders stat, batchSum, batchCount float64) error {
	if batchCount > 0 {
		mean := batchSum / batchCount
		b.add(row{group: "flux-order", what: "sell-out: mean purchase batch (flux_order_confirm_batch_size _sum / _count, all runs)", unit: "per batch", value: mean})
		n := max(1, int(math.Round(mean)))
		batched, err := b.pgbenchBatched(ctx, n)
		if err != nil {
			return err
		}
		b.addStat(row{group: "ceiling", what: fmt.Sprintf("pgbench: keyed confirm_purchases_locked of %d members per statement (the pods' mean batch), 16 clients: tx/s × members", n),
			unit: "orders/s", ceiling: b.pgTPS}, batched)
		b.addStat(row{group: "flux-order", what: "sell-out against the batched ceiling (the disk's limit at the pods' batch size)", unit: "orders/s",
			ceiling: batched.med}, orders)
	} else {
		// A build before group commit (the baselines of issue 18).
		fmt.Fprintln(os.Stderr, "bench: the sell-out's pods counted no purchase batch (no flux_order_confirm_batch_size{kind=\"purchase\"}): no batched ceiling")
	}

	checkout, err := b.checkout(ctx)
	if err != nil {
		return err
	}
	b.addStat(row{group: "flux-order", what: "checkout: hold + confirm, no think time, 64 connections (flux-order loadtest hold-confirm, audited)", unit: "orders/s",
		ceiling: b.pgTPS, target: "≥ 1 × pgbench", ok: atLeast(checkout.med, b.pgTPS, 1)}, checkout)

	// The same lone buyer with one commit per order (--confirm-batch-max
	// 1), as before group commit, measured in the same run: "before" on
	// this machine's disk, not a figure carried from another machine. The
	// two alternate, round by round (as wrkVsNull does), so that a drift
	// of the host's disk or CPU between minutes falls on both.
	var befores, afters []float64
	for round := range *runs {
		x, err := b.loneP50(ctx, "--confirm-batch-max", "1")
		if err != nil {
			return err
		}
		y, err := b.loneP50(ctx)
		if err != nil {
			return err
		}
		befores, afters = append(befores, x), append(afters, y)
		fmt.Fprintf(os.Stderr, "bench: one connection, round %d: p50 of a 201 %.3f ms with --confirm-batch-max 1, %.3f ms batched (%.2f ×)\n", round+1, x, y, y/x)
	}
	before, p50 := statOf(befores), statOf(afters)
	b.addStat(row{group: "flux-order", what: "one connection: p50 of a 201, --confirm-batch-max 1 (one commit per order, as before group commit)", unit: "ms"}, before)
	ok := before.med > 0 && p50.med <= 1.1*before.med
	b.addStat(row{group: "flux-order", what: "one connection: p50 of a 201 (sell-out walk, fresh sale)", unit: "ms",
		ceiling: before.med, target: "within 10 % of before group commit (the row above)", ok: &ok}, p50)
	return nil
}

// loneP50 is the p50 of a 201 for one buyer at a time (one connection),
// on a fresh sale of a pod started with extra flags.
func (b *bench) loneP50(ctx context.Context, extra ...string) (float64, error) {
	if err := b.settle(ctx); err != nil {
		return 0, err
	}
	url, _, stop, err := b.purchaseWith(ctx, *sellOut, extra...)
	if err != nil {
		return 0, err
	}
	defer stop()
	res, err := load(ctx, loadtest.Config{URL: url, Scenario: loadtest.SellOut, Seats: *sellOut, Buyers: 100_000,
		Concurrency: 1, Duration: *duration, UntilSoldOut: true})
	if err != nil {
		return 0, err
	}
	created := res.Summary.Outcomes[loadtest.Created.Key()]
	if created.Count == 0 {
		return 0, fmt.Errorf("one connection: no 201 in %d requests", res.Summary.Requests)
	}
	return created.P50Ms, nil
}

// checkout measures hold + confirm: loadtest's hold-confirm scenario with no
// think time and every hold confirmed, on a fresh sale of -sellout-seats
// seats (a steady state: the run ends at twice -duration, long before the
// sale would sell out), audited like the sell-out. Confirmed orders/s.
func (b *bench) checkout(ctx context.Context) (stat, error) {
	return median(func() (float64, error) {
		if err := b.settle(ctx); err != nil {
			return 0, err
		}
		url, db, stop, err := b.purchaseWith(ctx, *sellOut, "--hold-ttl", "60s")
		if err != nil {
			return 0, err
		}
		defer stop()
		auditor, err := loadtest.NewAuditor(ctx, db)
		if err != nil {
			return 0, err
		}
		res, err := load(ctx, loadtest.Config{URL: url, Scenario: loadtest.HoldConfirm, Seats: *sellOut, Buyers: 100_000,
			Concurrency: 64, Duration: 2 * *duration, UntilSoldOut: true, ConfirmShare: 1})
		if err != nil {
			return 0, err
		}
		h := res.Summary.Holds
		if h == nil || h.Confirmed == 0 || h.Errors > 0 {
			return 0, fmt.Errorf("checkout: %+v", h)
		}
		report := auditor.Check(ctx, res.Created, func(ctx context.Context) (loadtest.Availability, error) {
			return loadtest.FetchAvailability(ctx, loadtest.Config{URL: url})
		}, true)
		if !report.OK {
			return 0, fmt.Errorf("checkout audit failed: %+v", report)
		}
		return float64(h.Confirmed) / res.Summary.DurationSeconds, nil
	})
}

var pgProcessed = regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`)

// pgbenchBatched runs the pods' batched statement, keyed
// confirm_purchases_locked with n members, in pgbench (16 clients, as the one-order row) on a database
// that `flux-order purchase` migrated and seeded with ceilingSeats seats,
// with the outbox's switch off (as in the sell-out: no webhook). Each batch takes the next n seats of the sell-out's walk (a sequence
// scrambled by a stride prime to the inventory), so no seat repeats and
// every member is written, by buyers buyer-1..buyer-100000 as in the
// sell-out. Orders/s = tx/s × the orders each transaction wrote (n, as
// counted in the orders table).
func (b *bench) pgbenchBatched(ctx context.Context, n int) (stat, error) {
	if err := b.settle(ctx); err != nil {
		return stat{}, err
	}
	url, db, stop, err := b.purchaseWith(ctx, ceilingSeats)
	if err != nil {
		return stat{}, err
	}
	stop()
	stride := int64(ceilingSeats*618/1000 + 1)
	for gcdInt(stride, ceilingSeats) != 1 {
		stride++
	}
	if out, err := exec.CommandContext(ctx, "psql", "-q", "-v", "ON_ERROR_STOP=1", db, "-c", "CREATE SEQUENCE bench_walk MINVALUE 0 START 0",
		// As the sell-out runs it: a sale with no webhook writes no events
		// (the pod just stopped turned the outbox off already; said
		// here so the row does not depend on how long it ran).
		"-c", "UPDATE outbox_switch SET enabled = false").CombinedOutput(); err != nil {
		return stat{}, fmt.Errorf("pgbench setup (%s): %v\n%s", url, err, out)
	}
	script := filepath.Join(b.bin, fmt.Sprintf("confirm-batch-%d.sql", n))
	// Keyed, as the load client sends every purchase: the pods run the
	// locked wrapper (migration 00014), one advisory lock per member.
	sql := fmt.Sprintf(`SELECT count(*) FROM (SELECT array_agg(1 + (k %% %[2]d) * %[3]d %% %[2]d) AS seats, array_agg(o) AS orders, `+
		`array_agg('buyer-' || (k %% 100000 + 1)) AS buyers, array_agg('key-' || k) AS keys, `+
		`array_agg(hashtextextended(o::text, 0) ORDER BY hashtextextended(o::text, 0)) AS locks `+
		`FROM (SELECT nextval('bench_walk') AS k, gen_random_uuid() AS o FROM generate_series(1, %[1]d)) walk) m, `+
		`LATERAL confirm_purchases_locked(m.seats, m.orders, m.buyers, m.keys, 0, m.locks, clock_timestamp() + interval '5 s') c;
`, n, ceilingSeats, stride)
	if err := os.WriteFile(script, []byte(sql), 0o644); err != nil {
		return stat{}, err
	}
	secs := strconv.Itoa(max(1, int(duration.Seconds())))
	return median(func() (float64, error) {
		before, err := countOrders(ctx, db)
		if err != nil {
			return 0, err
		}
		out, err := exec.CommandContext(ctx, "pgbench", "-n", "-c", "16", "-j", "2", "-T", secs, "-f", script, db).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("pgbench: %v\n%s", err, out)
		}
		tps, tx := pgTPS.FindSubmatch(out), pgProcessed.FindSubmatch(out)
		if tps == nil || tx == nil {
			return 0, fmt.Errorf("pgbench: no tps or transaction count in its output:\n%s", out)
		}
		after, err := countOrders(ctx, db)
		if err != nil {
			return 0, err
		}
		if after >= ceilingSeats {
			fmt.Fprintf(os.Stderr, "bench: the batched pgbench walked past its %d seats (%d orders): later members found their seat sold; raise ceilingSeats\n", ceilingSeats, after)
		}
		rate, _ := strconv.ParseFloat(string(tps[1]), 64)
		txs, _ := strconv.ParseFloat(string(tx[1]), 64)
		if txs == 0 || after == before {
			return 0, fmt.Errorf("pgbench wrote no orders:\n%s", out)
		}
		return rate * float64(after-before) / txs, nil
	})
}

func countOrders(ctx context.Context, db string) (int64, error) {
	out, err := exec.CommandContext(ctx, "psql", "-tA", "-v", "ON_ERROR_STOP=1", db, "-c", "SELECT count(*) FROM orders").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("count orders: %v\n%s", err, out)
	}
	return strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
}

func gcdInt(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// histogramSum reads a histogram's _sum and _count with the given label
// (like kind="purchase") from a Prometheus text endpoint; both are 0 if the
// endpoint has no such histogram.
func histogramSum(url, name, label string) (sum, count float64, err error) {
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var found int
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		series, value, ok := strings.Cut(line, " ")
		if !ok || !strings.Contains(series, label) {
			continue
		}
		var dst *float64
		switch {
		case strings.HasPrefix(series, name+"_sum{"):
			dst = &sum
		case strings.HasPrefix(series, name+"_count{"):
			dst = &count
		default:
			continue
		}
		if *dst, err = strconv.ParseFloat(value, 64); err != nil {
			return 0, 0, fmt.Errorf("%s: %q: %w", url, line, err)
		}
		found++
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if found == 1 {
		return 0, 0, fmt.Errorf("%s: %s{%s} has a _sum or a _count, not both", url, name, label)
	}
	return sum, count, nil
}
