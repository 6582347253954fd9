package purchase_test

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// joined is one buyer's join as the buyer saw it.
type joined struct {
	buyer      string
	id         string
	seq        int64
	start, end time.Time
}

// joinAll joins n buyers concurrently, spread over the sale's pods.
func joinAll(t *testing.T, s *testSale, prefix string, n, workers int) []joined {
	t.Helper()
	out := make([]joined, n)
	var mu sync.Mutex
	var failed []string
	storm(n, workers, func(i int) {
		b := fmt.Sprintf("%s-%d", prefix, i)
		start := time.Now()
		j := s.join(i%len(s.Pods), b)
		// A buyer retries a join that got no answer (a loaded machine may
		// cut a connection): the first attempt may have committed, so the
		// join spans from the first attempt's start to the answer.
		for try := 0; (j.Status == -1 || j.Status == http.StatusServiceUnavailable) && try < 3; try++ {
			j = s.join(i%len(s.Pods), b)
		}
		end := time.Now()
		if j.Status != http.StatusAccepted && j.Status != http.StatusOK {
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%s: %d %s", b, j.Status, j.Code))
			mu.Unlock()
			return
		}
		q, err := s.Pods[0].Svc.Queue.Signer().ParseQueueID(j.Body.QueueID)
		if err != nil || q.Buyer != b {
			mu.Lock()
			failed = append(failed, fmt.Sprintf("%s: queue id %q does not parse to its buyer", b, j.Body.QueueID))
			mu.Unlock()
			return
		}
		out[i] = joined{buyer: b, id: j.Body.QueueID, seq: q.Seq, start: start, end: end}
	})
	if len(failed) > 0 {
		t.Fatalf("%d joins failed, first: %s", len(failed), failed[0])
	}
	return out
}

// admissionSteps reads the admitter's steps: for each, the slots it
// admitted, (from, to], and when.
func admissionSteps(t *testing.T, s *testSale) []struct {
	from, to, n int64
	at          time.Time
} {
	t.Helper()
	rows, err := s.DB.Query(context.Background(), `SELECT from_slot, serving_slot, admitted, at FROM queue_admissions ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var steps []struct {
		from, to, n int64
		at          time.Time
	}
	for rows.Next() {
		var st struct {
			from, to, n int64
			at          time.Time
		}
		if err := rows.Scan(&st.from, &st.to, &st.n, &st.at); err != nil {
			t.Fatal(err)
		}
		steps = append(steps, st)
	}
	return steps
}

// checkAdmittedOnce fails unless the steps admit consecutive, disjoint
// slot ranges whose buyers add up to want, and every slot of slots is in
// exactly one of them. It returns each buyer's step index.
func checkAdmittedOnce(t *testing.T, s *testSale, want int) map[string]int {
	t.Helper()
	slots, serving := s.queueRows()
	steps := admissionSteps(t, s)
	var total, prev int64
	for i, st := range steps {
		if st.from != prev || st.to <= st.from {
			t.Fatalf("step %d admits (%d, %d] after a step ending at %d: ranges must be consecutive and disjoint", i, st.from, st.to, prev)
		}
		prev = st.to
		total += st.n
	}
	if prev != serving || total != int64(want) {
		t.Fatalf("steps end at slot %d admitting %d buyers; the serving slot is %d, want %d buyers", prev, total, serving, want)
	}
	stepOf := map[string]int{}
	perStep := make([]int64, len(steps))
	for b, slot := range slots {
		i := sort.Search(len(steps), func(i int) bool { return steps[i].to >= slot })
		if i == len(steps) {
			continue // not admitted
		}
		stepOf[b] = i
		perStep[i]++
	}
	for i, st := range steps {
		if perStep[i] != st.n {
			t.Fatalf("step %d says it admitted %d buyers, its slots hold %d", i, st.n, perStep[i])
		}
	}
	return stepOf
}

func TestQueue_FIFO_ThreePodsThousandBuyers_NoInversions(t *testing.T) {
	t.Parallel()
	const buyers = 1000
	// Admission runs while the joins arrive: a join whose batch commits
	// late must still not be passed over.
	s := newQueueSale(t, 10_000, 3, withQueue(waitingroom.Settings{AdmitPerSecond: 400}))
	js := joinAll(t, s, "fifo", buyers, 48)

	// Every buyer is admitted, seen through a pod other than the one it
	// joined on, with a pass that buys.
	var wg sync.WaitGroup
	var mu sync.Mutex
	passes := map[string]string{}
	for w := range 20 {
		wg.Go(func() {
			for i := w; i < buyers; i += 20 {
				var p queueAnswer
				testservers.Eventually(t, 20*time.Second, 20*time.Millisecond, js[i].buyer+" admitted", testservers.Holds(func() bool {
					p = s.poll((i+1)%3, js[i].id)
					return p.Body.State == waitingroom.StateAdmitted
				}))
				mu.Lock()
				passes[js[i].buyer] = p.Body.Pass
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stepOf := checkAdmittedOnce(t, s, buyers)

	// An inversion: a buyer whose join was answered before another's began
	// is placed or admitted after it.
	sort.Slice(js, func(a, b int) bool { return js[a].end.Before(js[b].end) })
	inversions := 0
	for a := range js {
		for b := range js {
			if js[a].end.Before(js[b].start) && (js[a].seq > js[b].seq || stepOf[js[a].buyer] > stepOf[js[b].buyer]) {
				inversions++
			}
		}
	}
	if inversions != 0 {
		t.Fatalf("FIFO across 3 pods: want 0 inversions, got %d", inversions)
	}
	if a := s.buyWithPass(1, js[0].buyer, passes[js[0].buyer]); a.Status != http.StatusCreated {
		t.Fatalf("an admitted buyer's pass must buy: %d %s", a.Status, a.Code)
	}
}

func TestQueue_AdmissionRate_WithinTenPercentOverTenSeconds(t *testing.T) {
	t.Parallel()
	const rate = 40
	s := newQueueSale(t, 10_000, 2, withQueue(waitingroom.Settings{AdmitPerSecond: rate}), func(c *purchase.Config) {
		c.Schedule.StartsAt = time.Now().Add(time.Hour)
	})
	joinAll(t, s, "rate", 12*rate+100, 32) // more than 12 s of admissions
	for _, p := range s.Pods {
		p.Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: time.Now()})
	}
	var first time.Time
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the first admission", testservers.Holds(func() bool {
		steps := admissionSteps(t, s)
		if len(steps) > 0 {
			first = steps[0].at
		}
		return len(steps) > 0
	}))
	window := 10 * time.Second
	testservers.Eventually(t, window+5*time.Second, 20*time.Millisecond, "10 s of admissions", testservers.Holds(func() bool {
		steps := admissionSteps(t, s)
		return steps[len(steps)-1].at.After(first.Add(window))
	}))
	var admitted int64
	for _, st := range admissionSteps(t, s) {
		if !st.at.After(first.Add(window)) {
			admitted += st.n
		}
	}
	want := float64(rate) * window.Seconds()
	if math.Abs(float64(admitted)-want) > 0.1*want {
		t.Fatalf("admitted %d buyers in %v at %d/s: want %v ±10%%", admitted, window, rate, want)
	}
	t.Logf("admitted %d in %v (want %v)", admitted, window, want)
	var total int
	if err := s.DB.QueryRow(context.Background(), `SELECT admitted FROM queue_state`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	checkAdmittedOnce(t, s, total)
}

func TestQueue_InventoryBound_SoldOutReachesEveryWaitingBuyerWithinOneSecond(t *testing.T) {
	t.Parallel()
	const seats, buyers = 5, 60
	s := newQueueSale(t, seats, 3, withQueue(waitingroom.Settings{AdmitPerSecond: 1000}))
	js := joinAll(t, s, "so", buyers, 16)
	admittedNow := func() int64 {
		slots, serving := s.queueRows()
		n := int64(0)
		for _, slot := range slots {
			if slot <= serving {
				n++
			}
		}
		return n
	}
	// At 1000/s everyone would be in at once; the inventory lets in
	// waitingroom.AdmitMultiple × available.
	var passes []joined
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the first admissions, seen through the API", testservers.Holds(func() bool {
		passes = nil
		for _, j := range js {
			if p := s.poll(0, j.id); p.Body.State == waitingroom.StateAdmitted {
				passes = append(passes, joined{buyer: j.buyer, id: p.Body.Pass})
			}
		}
		return len(passes) >= waitingroom.AdmitMultiple*seats
	}))
	if len(passes) != waitingroom.AdmitMultiple*seats || admittedNow() != waitingroom.AdmitMultiple*seats {
		t.Fatalf("want %d admitted buyers, got %d seen through the API, %d in Postgres", waitingroom.AdmitMultiple*seats, len(passes), admittedNow())
	}

	// Pollers on every pod watch the waiting buyers while the last seats sell.
	waiting := map[string]string{}
	for _, j := range js {
		if s.poll(0, j.id).Body.State == waitingroom.StateWaiting {
			waiting[j.buyer] = j.id
		}
	}
	if len(waiting) != buyers-waitingroom.AdmitMultiple*seats {
		t.Fatalf("want %d waiting, got %d", buyers-waitingroom.AdmitMultiple*seats, len(waiting))
	}
	var mu sync.Mutex
	sawSoldOut := map[string]time.Time{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	i := 0
	for b, id := range waiting {
		i++
		pod := i % 3
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if s.poll(pod, id).Body.State == waitingroom.StateSoldOut {
					mu.Lock()
					if _, ok := sawSoldOut[b]; !ok {
						sawSoldOut[b] = time.Now()
					}
					mu.Unlock()
				}
			}
		})
	}
	var soldOutAt time.Time
	for i, p := range passes[:seats] {
		if a := s.buyWithPass(int64(i+1), p.buyer, p.id); a.Status != http.StatusCreated {
			t.Fatalf("admitted buyer %s: want 201, got %d %s", p.buyer, a.Status, a.Code)
		}
		soldOutAt = time.Now()
	}
	testservers.Eventually(t, 3*time.Second, 20*time.Millisecond, "every waiting buyer sees sold_out", testservers.Holds(func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sawSoldOut) == len(waiting)
	}))
	close(stop)
	wg.Wait()
	var slowest time.Duration
	for _, at := range sawSoldOut {
		slowest = max(slowest, at.Sub(soldOutAt))
	}
	if slowest > time.Second {
		t.Fatalf("sold-out reached the last waiting buyer %v after the last sale: want within 1 s", slowest)
	}
	t.Logf("sold-out reached all %d waiting buyers within %v", len(waiting), slowest)
	if j := s.join(1, "latecomer"); j.Status != http.StatusConflict || j.Code != "sold_out" {
		t.Fatalf("join when sold out: want 409 sold_out, got %d %s", j.Status, j.Code)
	}
	if n := admittedNow(); n != waitingroom.AdmitMultiple*seats {
		t.Fatalf("admitted %d with no seat left: want still %d", n, waitingroom.AdmitMultiple*seats)
	}

	// Seats come back (here: the inventory grows): waiting buyers wait
	// again and more are let in, still bounded: 5 available, 5 of the 10
	// admitted bought, so 5 active, room for 2×5−5 = 5 more.
	for _, p := range s.Pods {
		if err := p.Svc.Checkout.Grow(context.Background(), 2*seats); err != nil {
			t.Fatal(err)
		}
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "more buyers admitted after seats came back", testservers.Holds(func() bool {
		return admittedNow() == waitingroom.AdmitMultiple*seats+seats
	}))
	back := 0
	testservers.Eventually(t, 2*time.Second, 20*time.Millisecond, "every former sold_out buyer waiting or admitted again", testservers.Holds(func() bool {
		back = 0
		for _, id := range waiting {
			switch s.poll(2, id).Body.State {
			case waitingroom.StateWaiting, waitingroom.StateAdmitted:
				back++
			}
		}
		return back == len(waiting)
	}))
}

func TestQueue_MaxActiveBuyers_CapsAndReleasesOnPurchase(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 100, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 1000, MaxActiveBuyers: 3}))
	js := joinAll(t, s, "cap", 20, 4)
	admitted := func() []joined {
		var out []joined
		for _, j := range js {
			if p := s.poll(0, j.id); p.Body.State == waitingroom.StateAdmitted {
				out = append(out, joined{buyer: j.buyer, id: p.Body.Pass})
			}
		}
		return out
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "3 admitted", testservers.Holds(func() bool { return len(admitted()) == 3 }))
	// A buyer who bought is no longer active: one more gets in.
	first := admitted()[0]
	if a := s.buyWithPass(1, first.buyer, first.id); a.Status != http.StatusCreated {
		t.Fatalf("want 201, got %d %s", a.Status, a.Code)
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "a 4th admitted after a purchase", testservers.Holds(func() bool { return len(admitted()) == 4 }))
	_, serving := s.queueRows()
	if got := len(admitted()); got != 4 || serving != 4 {
		t.Fatalf("want exactly 4 admitted (3 active + 1 done), got %d (serving slot %d)", got, serving)
	}
	// What the pod reports into status.waitingRoom.
	want := waitingroom.Counts{Waiting: 16, Admitted: 4, ServingPosition: 4}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, fmt.Sprintf("status counts %+v", want), testservers.Holds(func() bool {
		c, ok := s.Pods[0].Svc.Queue.Counts()
		return ok && c == want
	}))
	s.Pods[0].Svc.Queue.Set(waitingroom.Settings{})
	if c, ok := s.Pods[0].Svc.Queue.Counts(); ok {
		t.Fatalf("with the waiting room off the pod must report none, got %+v", c)
	}
}

func TestQueue_FlushAllMidQueue_NoPlaceLostNoDoubleAdmission(t *testing.T) {
	t.Parallel()
	const buyers = 300
	s := newQueueSale(t, 10_000, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 150}), func(c *purchase.Config) {
		c.Schedule.StartsAt = time.Now().Add(time.Hour)
	})
	js := joinAll(t, s, "flush", buyers, 16)
	for _, p := range s.Pods {
		p.Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: time.Now()})
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "a third admitted", testservers.Holds(func() bool {
		return queueState(s.Pods[0]).Admitted >= buyers/3
	}))
	rdb := purchasetest.AdminRedis()
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	// Places survive: every re-join answers the same queue id.
	for i, j := range js {
		if re := s.join(i%2, j.buyer); re.Body.QueueID != j.id {
			t.Fatalf("after FLUSHALL %s re-joined as %s, was %s", j.buyer, re.Body.QueueID, j.id)
		}
	}
	testservers.Eventually(t, 10*time.Second, 20*time.Millisecond, "everyone admitted", testservers.Holds(func() bool {
		return queueState(s.Pods[1]).Admitted == buyers
	}))
	// Each buyer admitted once, in join order.
	stepOf := checkAdmittedOnce(t, s, buyers)
	sort.Slice(js, func(a, b int) bool { return js[a].seq < js[b].seq })
	for i := 1; i < len(js); i++ {
		if stepOf[js[i-1].buyer] > stepOf[js[i].buyer] {
			t.Fatalf("%s (seq %d) admitted after %s (seq %d)", js[i-1].buyer, js[i-1].seq, js[i].buyer, js[i].seq)
		}
	}
	p := s.poll(1, js[buyers-1].id)
	if a := s.buyWithPass(1, js[buyers-1].buyer, p.Body.Pass); a.Status != http.StatusCreated {
		t.Fatalf("a pass after FLUSHALL: want 201, got %d %s", a.Status, a.Code)
	}
}
