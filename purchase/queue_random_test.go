package purchase_test

import (
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

func TestQueue_Random_PrequeueShuffledAtStartsAt_UniformByChiSquare(t *testing.T) {
	t.Parallel()
	const prequeue, late = 1000, 100
	startsAt := time.Now().Add(time.Hour)
	// One admission at most (maxActiveBuyers 1, nobody buys): places stay
	// put while the test reads them.
	s := newQueueSale(t, 10_000, 3, withQueue(waitingroom.Settings{AdmitPerSecond: 100, MaxActiveBuyers: 1, Order: waitingroom.Random}),
		func(c *purchase.Config) { c.Schedule.StartsAt = startsAt })
	early := joinAll(t, s, "pre", prequeue, 32)
	// Before the shuffle a Random place is unknown.
	if p := s.poll(1, early[0].id); p.Body.State != waitingroom.StateWaiting || p.Body.Position != nil || p.Body.EstimatedWaitSeconds == nil {
		t.Fatalf("before startsAt: want waiting with position null and a wait, got %+v", p.Body)
	}
	for _, p := range s.Pods {
		p.Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: time.Now()})
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the shuffle seen by every pod", testservers.Holds(func() bool {
		for _, p := range s.Pods {
			if st := queueState(p); st.ShuffleSeed == nil || st.ServingSlot == 0 {
				return false
			}
		}
		return true
	}))
	latecomers := joinAll(t, s, "late", late, 8)
	slots, serving := s.queueRows()

	// Every pod reports the place Postgres holds, from the seed alone.
	for i, j := range append(append([]joined{}, early[:50]...), latecomers[:20]...) {
		p := s.poll(i%3, j.id)
		if slots[j.buyer] <= serving {
			if p.Body.State != waitingroom.StateAdmitted {
				t.Fatalf("%s at slot %d ≤ serving %d: want admitted, got %+v", j.buyer, slots[j.buyer], serving, p.Body)
			}
			continue
		}
		if p.Status != http.StatusOK || p.Body.Position == nil || *p.Body.Position != slots[j.buyer]-serving {
			t.Fatalf("%s: slot %d, serving %d, but the poll says %+v", j.buyer, slots[j.buyer], serving, p.Body)
		}
	}

	// Latecomers queue behind the whole prequeue, in arrival order.
	var maxEarly int64
	for _, j := range early {
		maxEarly = max(maxEarly, slots[j.buyer])
	}
	sort.Slice(latecomers, func(a, b int) bool { return latecomers[a].seq < latecomers[b].seq })
	for i, j := range latecomers {
		if slots[j.buyer] <= maxEarly || (i > 0 && slots[j.buyer] <= slots[latecomers[i-1].buyer]) {
			t.Fatalf("latecomer %s at slot %d: want behind the prequeue (≤ %d) and after the previous latecomer", j.buyer, slots[j.buyer], maxEarly)
		}
	}

	// The shuffle happened: join order and admission order are independent.
	// Rank both, cut each into 10 deciles; a 10×10 table of counts (10
	// expected in each cell), chi-square with 81 degrees of freedom at p = 0.001.
	sort.Slice(early, func(a, b int) bool { return early[a].seq < early[b].seq })
	bySlot := append([]joined{}, early...)
	sort.Slice(bySlot, func(a, b int) bool { return slots[bySlot[a].buyer] < slots[bySlot[b].buyer] })
	slotRank := map[string]int{}
	for r, j := range bySlot {
		slotRank[j.buyer] = r
	}
	var table [10][10]int
	var d2 float64
	for r, j := range early {
		table[r*10/prequeue][slotRank[j.buyer]*10/prequeue]++
		d := float64(r - slotRank[j.buyer])
		d2 += d * d
	}
	chi2 := 0.0
	for _, row := range table {
		for _, c := range row {
			d := float64(c) - 10
			chi2 += d * d / 10
		}
	}
	n := float64(prequeue)
	spearman := 1 - 6*d2/(n*(n*n-1))
	t.Logf("prequeue of %d: chi-square %.1f (81 df), Spearman ρ(join, admission) = %.3f", prequeue, chi2, spearman)
	if chi2 > 126.1 { // χ²(81) at p = 0.001 (Wilson–Hilferty)
		t.Fatalf("admission order depends on join order: chi-square %.1f > 126.1; table %v", chi2, table)
	}
	if spearman > 0.2 || spearman < -0.2 {
		t.Fatalf("the prequeue was not shuffled: Spearman ρ = %.3f", spearman)
	}
}
