package purchase_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// A Random prequeue of a few hundred thousand starts admitting at once
// (issue 17, defect 2): the shuffle used to rewrite every row in one
// transaction inside the admitter step's 2-second budget, timed out on
// every attempt, and held the queue's lock against joins meanwhile.
func TestQueue_Random_LargePrequeue_AdmitsAtOnceWritesNoRowJoinsAnswered(t *testing.T) {
	t.Parallel()
	const bulk, early, late = 300_000, 20, 40
	s := newQueueSale(t, 10_000, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 200, Order: waitingroom.Random}),
		func(c *purchase.Config) { c.Schedule.StartsAt = time.Now().Add(time.Hour) })
	ctx := context.Background()
	first := joinAll(t, s, "early", early, 8)
	// The rest of the prequeue written as joins write it (slot = seq), in
	// one statement: joining them over HTTP would take minutes.
	if _, err := s.DB.Exec(ctx, `INSERT INTO queue (buyer_id, seq, slot)
		SELECT 'bulk-' || s, s, s FROM (SELECT nextval('queue_seq') AS s FROM generate_series(1, $1)) AS g`, bulk); err != nil {
		t.Fatal(err)
	}
	// Gaps: seqs drawn by joins whose statement failed.
	if _, err := s.DB.Exec(ctx, `DELETE FROM queue WHERE buyer_id IN ('bulk-100', 'bulk-101', 'bulk-5000')`); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	s.Pods[0].Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: start})
	// Joins at the start are answered while the admitter shuffles.
	var mu sync.Mutex
	var slowest time.Duration
	var latecomers []joined
	var wg sync.WaitGroup
	for i := range late {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 50 * time.Millisecond) // over the first 2 s
			b := fmt.Sprintf("late-%d", i)
			t0 := time.Now()
			j := s.join(0, b)
			d := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			slowest = max(slowest, d)
			if j.Status != http.StatusAccepted {
				t.Errorf("join of %s: %d %s", b, j.Status, j.Code)
				return
			}
			q, err := s.Pods[0].Svc.Queue.Signer().ParseQueueID(j.Body.QueueID)
			if err != nil {
				t.Errorf("join of %s: %v", b, err)
				return
			}
			latecomers = append(latecomers, joined{buyer: b, id: j.Body.QueueID, seq: q.Seq})
		})
	}
	var admittedAfter time.Duration
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "the first admission", testservers.Holds(func() bool {
		var n int64
		if err := s.DB.QueryRow(ctx, `SELECT admitted FROM queue_state`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		admittedAfter = time.Since(start)
		return n > 0
	}))
	wg.Wait()
	t.Logf("prequeue of %d: first admission %v after startsAt; slowest of %d joins meanwhile %v", bulk+early, admittedAfter, late, slowest)
	if admittedAfter > 3*time.Second {
		t.Fatalf("first admission %v after startsAt, want within 3 s", admittedAfter)
	}
	if slowest > time.Second {
		t.Fatalf("a join during the shuffle took %v, want ≤ 1 s", slowest)
	}

	// The shuffle wrote the seed and no queue row.
	var versions, moved int64
	if err := s.DB.QueryRow(ctx, `SELECT count(DISTINCT xmin::text), count(*) FILTER (WHERE slot <> seq)
		FROM queue WHERE buyer_id LIKE 'bulk-%'`).Scan(&versions, &moved); err != nil {
		t.Fatal(err)
	}
	if versions != 1 || moved != 0 {
		t.Fatalf("the shuffle rewrote prequeue rows: %d row versions (want the insert's 1), %d slots moved", versions, moved)
	}

	// Admission follows the computed permutation: every admitted buyer is a
	// prequeue buyer at the slot π puts them at, each slot up to the serving
	// one that a buyer holds is admitted, and the pod's polls agree. Paused,
	// so that nothing moves while the test reads.
	time.Sleep(time.Second)
	s.Pods[0].Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: start, Paused: true})
	time.Sleep(500 * time.Millisecond) // a step in flight, and the pod's view after it
	slots, serving := s.queueRows()
	rows, err := s.DB.Query(ctx, `SELECT slot, buyer_id FROM queue_admitted`)
	if err != nil {
		t.Fatal(err)
	}
	admitted := map[string]int64{}
	for rows.Next() {
		var slot int64
		var b string
		if err := rows.Scan(&slot, &b); err != nil {
			t.Fatal(err)
		}
		admitted[b] = slot
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var admittedCount, prequeue int64
	if err := s.DB.QueryRow(ctx, `SELECT admitted, prequeue_seq FROM queue_state`).Scan(&admittedCount, &prequeue); err != nil {
		t.Fatal(err)
	}
	if int64(len(admitted)) != admittedCount || admittedCount < 100 {
		t.Fatalf("queue_admitted holds %d buyers, the state says %d admitted (want ≥ 100 after a second at 200/s)", len(admitted), admittedCount)
	}
	if serving > prequeue {
		t.Fatalf("serving slot %d passed the prequeue (%d) after %d admissions", serving, prequeue, admittedCount)
	}
	inRange := 0
	for b, slot := range slots {
		if a, ok := admitted[b]; ok != (slot <= serving) || (ok && a != slot) {
			t.Fatalf("%s at slot %d (serving %d): admitted %v at slot %d", b, slot, serving, ok, a)
		}
		if slot <= serving {
			inRange++
		}
	}
	if inRange != len(admitted) {
		t.Fatalf("%d buyers at or below the serving slot, %d admitted", inRange, len(admitted))
	}
	sort.Slice(latecomers, func(a, b int) bool { return latecomers[a].seq < latecomers[b].seq })
	for _, j := range append(first, latecomers...) {
		p := s.poll(0, j.id)
		want := waitingroom.StateWaiting
		if slots[j.buyer] <= serving {
			want = waitingroom.StateAdmitted
		}
		if p.Body.State != want || (want == waitingroom.StateWaiting && (p.Body.Position == nil || *p.Body.Position != slots[j.buyer]-serving)) {
			t.Fatalf("%s at slot %d, serving %d: want %s, got %+v", j.buyer, slots[j.buyer], serving, want, p.Body)
		}
	}
	// Those who joined after the shuffle (all but the first few, who joined
	// within its first step) queue behind the prequeue in arrival order.
	after := 0
	for _, j := range latecomers {
		if j.seq <= prequeue {
			continue
		}
		after++
		if slots[j.buyer] != j.seq {
			t.Fatalf("latecomer %s (seq %d) at slot %d: want behind the prequeue (%d) in arrival order", j.buyer, j.seq, slots[j.buyer], prequeue)
		}
	}
	if after < late-5 {
		t.Fatalf("only %d of %d latecomers joined after the shuffle", after, late)
	}
}
