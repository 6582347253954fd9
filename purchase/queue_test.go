package purchase_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/sale"
	"github.com/flux-order/flux-order/purchase/statusreport"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

func TestQueue_JoinPollBuy_PassesForgedExpiredOrTransferredRefused(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 20}))

	// No pass, no purchase.
	a := s.buyWithPass(1, "alice", "")
	if a.Status != http.StatusUnauthorized || a.Code != "pass_required" || !strings.HasPrefix(a.Header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("purchase without a pass: want 401 pass_required with a Bearer challenge, got %d %s %q", a.Status, a.Code, a.Header.Get("WWW-Authenticate"))
	}

	j := s.join(0, "alice")
	if j.Status != http.StatusAccepted && j.Status != http.StatusOK || j.Body.QueueID == "" {
		t.Fatalf("join: want 202 with a queue id, got %d %s %+v", j.Status, j.Code, j.Body)
	}
	if j.Status == http.StatusAccepted && (j.Body.State != "waiting" || j.Body.Position == nil || j.Body.EstimatedWaitSeconds == nil) {
		t.Fatalf("join: want state waiting with a position and a wait, got %+v", j.Body)
	}
	if j.Header.Get("Retry-After") == "" {
		t.Fatal("join: no Retry-After")
	}
	var admitted queueAnswer
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "alice admitted", testservers.Holds(func() bool {
		admitted = s.poll(1, j.Body.QueueID) // another pod: the queue id is self-contained
		return admitted.Body.State == "admitted"
	}))
	pass := admitted.Body.Pass
	if pass == "" || admitted.Body.PassExpiresAt == nil || admitted.Header.Get("Retry-After") == "" {
		t.Fatalf("admitted: want a pass, its expiry and Retry-After, got %+v %v", admitted.Body, admitted.Header)
	}
	// Another pod (once its view caught up, within 200 ms) gives the same
	// pass: its expiry is fixed by the admission, not by the poll.
	var again queueAnswer
	testservers.Eventually(t, time.Second, 20*time.Millisecond, "pod 0 sees alice admitted", testservers.Holds(func() bool {
		again = s.poll(0, j.Body.QueueID)
		return again.Body.State == waitingroom.StateAdmitted
	}))
	if again.Body.Pass != pass {
		t.Fatalf("a second poll must give the same pass, got %q then %q", pass, again.Body.Pass)
	}
	// Re-joining: the same queue id and place, now admitted (200).
	if re := s.join(1, "alice"); re.Status != http.StatusOK || re.Body.QueueID != j.Body.QueueID || re.Body.State != "admitted" || re.Body.Pass != pass {
		t.Fatalf("re-join of an admitted buyer: want 200 admitted with the same id and pass, got %d %+v", re.Status, re.Body)
	}

	forged := []byte(pass)
	forged[len(forged)/2] ^= 1
	expired := s.Pods[0].Svc.Queue.Signer().Pass("alice", time.Now().Add(-time.Second))
	otherSale := waitingroom.NewSigner([]byte("another-secret"), s.Cfg.Sale).Pass("alice", time.Now().Add(time.Hour))
	for _, c := range []struct{ name, buyer, pass string }{
		{"forged", "alice", string(forged)},
		{"expired", "alice", expired},
		{"another buyer's", "mallory", pass},
		{"signed with another secret", "alice", otherSale},
		{"garbage", "alice", "not-a-pass"},
	} {
		if a := s.buyWithPass(2, c.buyer, c.pass); a.Status != http.StatusForbidden || a.Code != "pass_invalid" {
			t.Fatalf("%s pass: want 403 pass_invalid, got %d %s", c.name, a.Status, a.Code)
		}
	}
	if a := s.buyWithPass(2, "alice", pass); a.Status != http.StatusCreated {
		t.Fatalf("purchase with the pass: want 201, got %d %s", a.Status, a.Code)
	}
	if a := s.Audit(); a.Orders != 1 {
		t.Fatalf("refused passes must buy nothing: want 1 order, got %d", a.Orders)
	}
	if p := s.poll(0, j.Body.QueueID+"x"); p.Status != http.StatusNotFound || p.Code != "queue_not_found" {
		t.Fatalf("a tampered queue id: want 404 queue_not_found, got %d %s", p.Status, p.Code)
	}
}

func TestQueue_Off_NoPassNeededAndNoQueue(t *testing.T) {
	t.Parallel()
	s := newTestSale(t, 5)
	if a := s.buyWithPass(1, "bob", ""); a.Status != http.StatusCreated {
		t.Fatalf("without a waiting room a purchase needs no pass: got %d %s", a.Status, a.Code)
	}
	if j := s.join(0, "bob"); j.Status != http.StatusNotFound || j.Code != "queue_not_found" {
		t.Fatalf("join without a waiting room: want 404 queue_not_found, got %d %s", j.Status, j.Code)
	}
	// Turned on live from the FlashSale: passes are needed from the next
	// request on.
	pod := s.Pods[0].Svc
	pod.Apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second,
		WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, Order: salesv1alpha1.QueueRandom, PassTTL: &metav1.Duration{Duration: time.Minute}}})
	if wr := pod.Queue.Settings(); wr != (waitingroom.Settings{AdmitPerSecond: 5, Order: waitingroom.Random, PassTTL: time.Minute}) {
		t.Fatalf("live waiting room settings: got %+v", wr)
	}
	if a := s.buyWithPass(2, "bob", ""); a.Status != http.StatusUnauthorized {
		t.Fatalf("after turning the waiting room on: want 401, got %d %s", a.Status, a.Code)
	}
	// And off again: everyone may buy.
	pod.Apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second})
	if a := s.buyWithPass(3, "bob", ""); a.Status != http.StatusCreated {
		t.Fatalf("after turning the waiting room off: want 201, got %d %s", a.Status, a.Code)
	}
}

func TestQueue_Window_JoinFromAndEndsAt(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := newQueueSale(t, 5, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 5, JoinFrom: now.Add(time.Hour)}), func(c *purchase.Config) {
		c.Schedule.StartsAt = now.Add(2 * time.Hour)
	})
	if j := s.join(0, "early"); j.Status != http.StatusForbidden || j.Code != "sale_not_started" || j.Header.Get("Retry-After") == "" {
		t.Fatalf("join before joinFrom: want 403 sale_not_started with Retry-After, got %d %s", j.Status, j.Code)
	}
	// The queue opens at joinFrom; before startsAt a FIFO place is known
	// and nobody is admitted.
	s.Pods[0].Svc.Queue.Set(waitingroom.Settings{AdmitPerSecond: 5, JoinFrom: now.Add(-time.Minute)})
	j := s.join(0, "early")
	if j.Status != http.StatusAccepted || j.Body.State != "waiting" || j.Body.Position == nil || *j.Body.Position != 1 {
		t.Fatalf("join in the prequeue: want 202 waiting at position 1, got %d %s %+v", j.Status, j.Code, j.Body)
	}
	if *j.Body.EstimatedWaitSeconds < 3600 {
		t.Fatalf("the wait before startsAt must count the time to startsAt, got %d s", *j.Body.EstimatedWaitSeconds)
	}
	// After endsAt: joins refused, polls closed.
	s.Pods[0].Svc.Checkout.SetSchedule(sale.Schedule{StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)})
	if p := s.poll(0, j.Body.QueueID); p.Status != http.StatusOK || p.Body.State != "closed" {
		t.Fatalf("poll after endsAt: want closed, got %d %+v", p.Status, p.Body)
	}
	if j := s.join(0, "late"); j.Status != http.StatusForbidden || j.Code != "sale_ended" {
		t.Fatalf("join after endsAt: want 403 sale_ended, got %d %s", j.Status, j.Code)
	}
}

func TestQueue_Rejoin_SamePlace(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 5, 3, withQueue(waitingroom.Settings{AdmitPerSecond: 5}), func(c *purchase.Config) {
		c.Schedule.StartsAt = time.Now().Add(time.Hour) // nobody admitted: places stay put
	})
	first := map[string]httpapi.QueueBody{}
	for i := range 30 {
		b := fmt.Sprintf("b%d", i)
		j := s.join(i%3, b)
		if j.Status != http.StatusAccepted {
			t.Fatalf("join %s: %d %s", b, j.Status, j.Code)
		}
		first[b] = j.Body
	}
	for i := range 30 {
		b := fmt.Sprintf("b%d", i)
		j := s.join((i+1)%3, b) // through another pod
		if j.Body.QueueID != first[b].QueueID || *j.Body.Position != *first[b].Position {
			t.Fatalf("re-join of %s: want id %s at %d, got %s at %d", b, first[b].QueueID, *first[b].Position, j.Body.QueueID, *j.Body.Position)
		}
		if *j.Body.Position != int64(i+1) {
			t.Fatalf("sequential joins: %s should be at %d, is at %d", b, i+1, *j.Body.Position)
		}
	}
}

func TestQueue_KeyedRetryAfterThePassExpired_GetsItsOrderButBuysNothingNew(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 50}))
	signer := s.Pods[0].Svc.Queue.Signer()
	valid := signer.Pass("carol", time.Now().Add(time.Minute))
	expired := signer.Pass("carol", time.Now().Add(-time.Second))
	h := func(pass, key string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + pass, "Idempotency-Key": key}
	}
	first := s.Post(0, "/v1/tickets/4/purchase", `{"buyerId":"carol"}`, h(valid, "k1"))
	if first.Status != http.StatusCreated {
		t.Fatalf("with a valid pass: want 201, got %d %s", first.Status, first.Code)
	}
	retry := s.Post(0, "/v1/tickets/4/purchase", `{"buyerId":"carol"}`, h(expired, "k1"))
	if retry.Status != http.StatusCreated || retry.Order.ID != first.Order.ID || retry.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("a keyed retry after the pass expired: want the same order replayed, got %d %s %+v", retry.Status, retry.Code, retry.Order)
	}
	if fresh := s.Post(0, "/v1/tickets/5/purchase", `{"buyerId":"carol"}`, h(expired, "k2")); fresh.Status != http.StatusForbidden || fresh.Code != "pass_invalid" {
		t.Fatalf("a new key with an expired pass: want 403 pass_invalid, got %d %s", fresh.Status, fresh.Code)
	}
	if a := s.Audit(); a.Orders != 1 {
		t.Fatalf("want 1 order, got %d", a.Orders)
	}
}

func TestQueue_HoldsNeedAPassToo_ConfirmDoesNot(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 5}), func(c *purchase.Config) { c.HoldTTL = time.Minute })
	pass := s.Pods[0].Svc.Queue.Signer().Pass("dave", time.Now().Add(time.Minute))
	for _, path := range []string{"/v1/tickets/3/hold", "/v1/holds"} {
		if a := s.Post(0, path, `{"buyerId":"dave"}`, nil); a.Status != http.StatusUnauthorized || a.Code != "pass_required" {
			t.Fatalf("POST %s without a pass: want 401 pass_required, got %d %s", path, a.Status, a.Code)
		}
		other := s.Pods[0].Svc.Queue.Signer().Pass("erin", time.Now().Add(time.Minute))
		if a := s.Post(0, path, `{"buyerId":"dave"}`, map[string]string{"Authorization": "Bearer " + other}); a.Status != http.StatusForbidden || a.Code != "pass_invalid" {
			t.Fatalf("POST %s with another buyer's pass: want 403 pass_invalid, got %d %s", path, a.Status, a.Code)
		}
	}
	var hold struct {
		HoldID string `json:"holdId"`
	}
	req, _ := http.NewRequest(http.MethodPost, s.Pods[0].URL+"/v1/tickets/3/hold", strings.NewReader(`{"buyerId":"dave"}`))
	req.Header.Set("Authorization", "Bearer "+pass)
	resp, err := s.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&hold)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || hold.HoldID == "" {
		t.Fatalf("a hold with the pass: want 201 with a hold id, got %d", resp.StatusCode)
	}
	// The hold id is the capability: confirming needs no pass (it may
	// have expired during checkout).
	if a := s.Post(0, "/v1/holds/"+hold.HoldID+"/confirm", `{"buyerId":"dave","paymentRef":"p-1"}`, nil); a.Status != http.StatusCreated {
		t.Fatalf("confirm without a pass: want 201, got %d %s", a.Status, a.Code)
	}
}

func TestQueue_EverySeatHeld_SoldOutUntilTheHoldsExpire(t *testing.T) {
	t.Parallel()
	// One active buyer at most: "first" is let in, "waits" waits.
	s := newQueueSale(t, 2, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 1000, MaxActiveBuyers: 1}), func(c *purchase.Config) { c.HoldTTL = 2 * time.Second })
	signer := s.Pods[0].Svc.Queue.Signer()
	s.join(0, "first")
	waiting := s.join(1, "waits")
	for seat, buyer := range map[int]string{1: "h1", 2: "h2"} {
		pass := signer.Pass(buyer, time.Now().Add(time.Minute))
		path := fmt.Sprintf("/v1/tickets/%d/hold", seat)
		if a := s.Post(0, path, fmt.Sprintf(`{"buyerId":%q}`, buyer), map[string]string{"Authorization": "Bearer " + pass}); a.Status != http.StatusCreated {
			t.Fatalf("hold of seat %d: want 201, got %d %s", seat, a.Status, a.Code)
		}
	}
	var j queueAnswer
	testservers.Eventually(t, time.Second, 20*time.Millisecond, "joins refused while every seat is held", testservers.Holds(func() bool {
		j = s.join(1, "late")
		return j.Status == http.StatusConflict
	}))
	if j.Code != "sold_out" || j.Header.Get("Retry-After") != "5" {
		t.Fatalf("join with every seat held: want 409 sold_out with Retry-After 5 (holds may end), got %d %s %q", j.Status, j.Code, j.Header.Get("Retry-After"))
	}
	held := time.Now()
	testservers.Eventually(t, time.Second, 20*time.Millisecond, "the waiting buyer told sold_out on every pod", testservers.Holds(func() bool {
		return s.poll(0, waiting.Body.QueueID).Body.State == waitingroom.StateSoldOut && s.poll(1, waiting.Body.QueueID).Body.State == waitingroom.StateSoldOut
	}))
	// The holds expire by themselves: seats come back, joins and places too.
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "a join accepted after the holds expired", testservers.Holds(func() bool {
		a := s.join(0, "late")
		return a.Status == http.StatusAccepted || a.Status == http.StatusOK
	}))
	testservers.Eventually(t, time.Second, 20*time.Millisecond, "the buyer waiting again on every pod", testservers.Holds(func() bool {
		return s.poll(0, waiting.Body.QueueID).Body.State == waitingroom.StateWaiting && s.poll(1, waiting.Body.QueueID).Body.State == waitingroom.StateWaiting
	}))
	t.Logf("seats back to the queue %v after the holds were taken (holdTTL 2s)", time.Since(held))
}

// TestQueue_HeldBack_IsNotAStall: with maxActiveBuyers shopping the
// admitter admits nobody on purpose and says so
// (flux_order_queue_held_back, which keeps FluxOrderQueueStalled silent);
// once the active buyer is gone it admits again and the gauge drops.
func TestQueue_HeldBack_IsNotAStall(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 1000, MaxActiveBuyers: 1}))
	svc := s.Pods[0].Svc
	first := s.join(0, "first")
	waiting := s.join(0, "waits")
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the admitter holds back with one buyer active", testservers.Holds(func() bool {
		return purchasetest.Counter(t, svc, "flux_order_queue_held_back") == 1
	}))
	if st := s.poll(0, waiting.Body.QueueID).Body.State; st != waitingroom.StateWaiting {
		t.Fatalf("the second buyer with maxActiveBuyers 1 taken: want waiting, got %s", st)
	}
	// The room switched off live and on again: no admitter holding back
	// meanwhile, so the gauge must not stay at 1 (it would silence the
	// alert for whichever pod admits next).
	wr := svc.Queue.Settings()
	svc.Queue.Set(waitingroom.Settings{})
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the gauge at 0 with the room off", testservers.Holds(func() bool {
		return purchasetest.Counter(t, svc, "flux_order_queue_held_back") == 0
	}))
	svc.Queue.Set(wr)
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "holding back again with the room on", testservers.Holds(func() bool {
		return purchasetest.Counter(t, svc, "flux_order_queue_held_back") == 1
	}))
	// The active buyer leaves the line: room again, the next is admitted.
	if a := s.leave(0, first.Body.QueueID); a.Status != http.StatusNoContent {
		t.Fatalf("leave: want 204, got %d %s", a.Status, a.Code)
	}
	testservers.Eventually(t, 5*time.Second, 20*time.Millisecond, "the next buyer admitted and the gauge back to 0", func() error {
		st, g := s.poll(0, waiting.Body.QueueID).Body.State, purchasetest.Counter(t, svc, "flux_order_queue_held_back")
		if st != waitingroom.StateAdmitted || g != 0 {
			return fmt.Errorf("the second buyer is %s, flux_order_queue_held_back %v", st, g)
		}
		return nil
	})
}
