package purchase_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// leave is DELETE /v1/queue/{queueId} on pod.
func (s *testSale) leave(pod int, queueID string) queueAnswer {
	req, _ := http.NewRequest(http.MethodDelete, s.Pods[pod].URL+"/v1/queue/"+queueID, nil)
	return s.queueDo(req)
}

// admittedPass waits until the queue id's buyer is admitted (polling pod)
// and returns their pass.
func (s *testSale) admittedPass(pod int, who, queueID string, within time.Duration) string {
	s.T.Helper()
	var a queueAnswer
	testservers.Eventually(s.T, within, 10*time.Millisecond, who+" admitted", testservers.Holds(func() bool {
		a = s.poll(pod, queueID)
		return a.Body.State == waitingroom.StateAdmitted
	}))
	return a.Body.Pass
}

// Issue 17, leaving the line: with max-active-buyers 1, an admitted buyer
// who leaves gives their place to the next buyer within one admission
// step (100 ms), not at the admitter's next recount of active buyers (up
// to 1 s later): three rounds, each timed on the database's clock from the
// leave to the step that admits the next buyer. The leaver's queue id then
// answers queue_not_found and their pass buys nothing; leaving again is
// 204.
func TestQueue_Leave_AdmittedBuyerLeaves_NextAdmittedWithinOneStep(t *testing.T) {
	s := newQueueSale(t, 10, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 50, MaxActiveBuyers: 1, PassTTL: 10 * time.Minute}))
	buyers := []string{"alice", "bob", "carol", "dave"}
	ids := map[string]string{}
	for _, b := range buyers {
		j := s.join(0, b)
		if j.Status != http.StatusAccepted && j.Status != http.StatusOK {
			t.Fatalf("join %s: %d %s", b, j.Status, j.Code)
		}
		ids[b] = j.Body.QueueID
	}
	pass := s.admittedPass(0, "alice", ids["alice"], 5*time.Second)
	time.Sleep(1500 * time.Millisecond) // past a recount of the active buyers
	if p := s.poll(0, ids["bob"]); p.Body.State != waitingroom.StateWaiting {
		t.Fatalf("with max-active-buyers 1, bob must wait while alice shops; got %+v", p.Body)
	}
	ctx := context.Background()
	for i, b := range buyers[:3] {
		next := buyers[i+1]
		var served int64
		if err := s.DB.QueryRow(ctx, `SELECT serving_slot FROM queue_state`).Scan(&served); err != nil {
			t.Fatal(err)
		}
		if l := s.leave(i%2, ids[b]); l.Status != http.StatusNoContent {
			t.Fatalf("%s leaves: want 204, got %d %s", b, l.Status, l.Code)
		}
		var step time.Duration
		testservers.Eventually(t, 5*time.Second, 10*time.Millisecond, next+" admitted in the database", func() error {
			return s.DB.QueryRow(ctx, `SELECT a.at - l.left_at FROM queue_admissions a, queue_left l
				WHERE a.serving_slot > $1 AND l.buyer_id = $2 ORDER BY a.id LIMIT 1`, served, b).Scan(&step)
		})
		t.Logf("%s left; %s admitted %v later (database clock)", b, next, step.Round(time.Millisecond))
		if step > 350*time.Millisecond {
			t.Errorf("%s admitted %v after %s left: want within one admission step (100 ms, 350 ms with slack), not at the next recount", next, step, b)
		}
		s.admittedPass(i%2, next, ids[next], 2*time.Second)
	}
	if p := s.poll(1, ids["alice"]); p.Status != http.StatusNotFound || p.Code != "queue_not_found" {
		t.Fatalf("alice's queue id after she left: want 404 queue_not_found, got %d %s %+v", p.Status, p.Code, p.Body)
	}
	if a := s.buyWithPass(1, "alice", pass); a.Status != http.StatusForbidden || a.Code != "pass_invalid" {
		t.Fatalf("alice's pass after she left: want 403 pass_invalid, got %d %s", a.Status, a.Code)
	}
	if l := s.leave(1, ids["alice"]); l.Status != http.StatusNoContent {
		t.Fatalf("leaving twice: want 204, got %d %s", l.Status, l.Code)
	}
	if l := s.leave(0, "forged"); l.Status != http.StatusNotFound || l.Code != "queue_not_found" {
		t.Fatalf("a forged queue id: want 404 queue_not_found, got %d %s", l.Status, l.Code)
	}
}

// A waiting buyer who leaves is passed over: the buyer behind them is
// admitted next. Their old queue id is gone on every pod; joining again
// queues them at the back, with a new queue id, and admits them in turn.
func TestQueue_Leave_WaitingBuyer_PassedOver_RejoinsAtTheBack(t *testing.T) {
	s := newQueueSale(t, 10, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 50, MaxActiveBuyers: 1, PassTTL: 10 * time.Minute}))
	ids := map[string]string{}
	for _, b := range []string{"alice", "bob", "carol"} {
		ids[b] = s.join(0, b).Body.QueueID
	}
	s.admittedPass(0, "alice", ids["alice"], 5*time.Second)
	if l := s.leave(0, ids["bob"]); l.Status != http.StatusNoContent {
		t.Fatalf("bob leaves: %d %s", l.Status, l.Code)
	}
	testservers.Eventually(t, 2*time.Second, 10*time.Millisecond, "pod 1 knows bob left", testservers.Holds(func() bool {
		return s.poll(1, ids["bob"]).Code == "queue_not_found"
	}))
	again := s.join(1, "bob")
	if again.Status != http.StatusAccepted || again.Body.QueueID == ids["bob"] || again.Body.Position == nil {
		t.Fatalf("bob joins again: want 202 with a new queue id and a position, got %d %+v", again.Status, again.Body)
	}
	if l := s.leave(1, ids["alice"]); l.Status != http.StatusNoContent {
		t.Fatalf("alice leaves: %d %s", l.Status, l.Code)
	}
	s.admittedPass(0, "carol", ids["carol"], 2*time.Second)
	if p := s.poll(0, again.Body.QueueID); p.Body.State != waitingroom.StateWaiting {
		t.Fatalf("bob, back in line behind carol: want waiting, got %+v", p.Body)
	}
	if l := s.leave(0, ids["carol"]); l.Status != http.StatusNoContent {
		t.Fatalf("carol leaves: %d %s", l.Status, l.Code)
	}
	pass := s.admittedPass(1, "bob", again.Body.QueueID, 2*time.Second)
	if a := s.buyWithPass(3, "bob", pass); a.Status != http.StatusCreated {
		t.Fatalf("bob buys with the pass of his second place: %d %s", a.Status, a.Code)
	}
}

// The page's Leave the queue button: a waiting buyer leaves, their queue id
// is gone on the server (404), and the page offers to join again.
func TestBrowser_LeaveTheQueue(t *testing.T) {
	tab := newTab(t, time.Minute)
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 50, MaxActiveBuyers: 1, PassTTL: 10 * time.Minute}))
	s.admittedPass(0, "ahead", s.join(0, "ahead").Body.QueueID, 5*time.Second) // shops, so the page's buyer waits
	openSalePage(t, tab, s.Pods[0].URL+"/", "lee")
	run(t, tab, "join, then wait in line",
		chromedp.Click(chromedp.CSS(`[data-action="join"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-action="leave"]`)))
	id := eval[string](t, tab, `JSON.parse(sessionStorage.getItem('fo.queue')).id`)
	if p := s.poll(0, id); p.Body.State != waitingroom.StateWaiting {
		t.Fatalf("lee before leaving: %+v", p.Body)
	}
	run(t, tab, "leave", chromedp.Click(chromedp.CSS(`[data-action="leave"]`)),
		chromedp.WaitVisible(chromedp.CSS(`[data-action="join"]`)))
	if p := s.poll(0, id); p.Status != http.StatusNotFound || p.Code != "queue_not_found" {
		t.Fatalf("lee's queue id after leaving from the page: want 404 queue_not_found, got %d %s", p.Status, p.Code)
	}
	if eval[bool](t, tab, `!document.querySelector('[data-action="leave"]').hidden || sessionStorage.getItem('fo.queue') !== null`) {
		t.Fatal("the page still shows a place in line")
	}
}
