package purchase

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func TestQueue_JoinPollBuy_PassesForgedExpiredOrTransferredRefused(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 2, withQueue(WaitingRoom{AdmitPerSecond: 20}))

	// No pass, no purchase.
	a := s.buyWithPass(1, "alice", "")
	if a.status != http.StatusUnauthorized || a.code != "pass_required" || !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("purchase without a pass: want 401 pass_required with a Bearer challenge, got %d %s %q", a.status, a.code, a.header.Get("WWW-Authenticate"))
	}

	j := s.join(0, "alice")
	if j.status != http.StatusAccepted && j.status != http.StatusOK || j.body.QueueID == "" {
		t.Fatalf("join: want 202 with a queue id, got %d %s %+v", j.status, j.code, j.body)
	}
	if j.status == http.StatusAccepted && (j.body.State != "waiting" || j.body.Position == nil || j.body.EstimatedWaitSeconds == nil) {
		t.Fatalf("join: want state waiting with a position and a wait, got %+v", j.body)
	}
	if j.header.Get("Retry-After") == "" {
		t.Fatal("join: no Retry-After")
	}
	var admitted queueAnswer
	testservers.Eventually(t, 5*time.Second, "alice admitted", func() bool {
		admitted = s.poll(1, j.body.QueueID) // another pod: the queue id is self-contained
		return admitted.body.State == "admitted"
	})
	pass := admitted.body.Pass
	if pass == "" || admitted.body.PassExpiresAt == nil || admitted.header.Get("Retry-After") == "" {
		t.Fatalf("admitted: want a pass, its expiry and Retry-After, got %+v %v", admitted.body, admitted.header)
	}
	// Another pod (once its view caught up, within 200 ms) gives the same
	// pass: its expiry is fixed by the admission, not by the poll.
	var again queueAnswer
	testservers.Eventually(t, time.Second, "pod 0 sees alice admitted", func() bool {
		again = s.poll(0, j.body.QueueID)
		return again.body.State == stateAdmitted
	})
	if again.body.Pass != pass {
		t.Fatalf("a second poll must give the same pass, got %q then %q", pass, again.body.Pass)
	}
	// Re-joining: the same queue id and place, now admitted (200).
	if re := s.join(1, "alice"); re.status != http.StatusOK || re.body.QueueID != j.body.QueueID || re.body.State != "admitted" || re.body.Pass != pass {
		t.Fatalf("re-join of an admitted buyer: want 200 admitted with the same id and pass, got %d %+v", re.status, re.body)
	}

	forged := []byte(pass)
	forged[len(forged)/2] ^= 1
	expired := s.pods[0].svc.queue.signer.pass("alice", time.Now().Add(-time.Second))
	otherSale := newTokenSigner([]byte("another-secret"), s.cfg.Sale).pass("alice", time.Now().Add(time.Hour))
	for _, c := range []struct{ name, buyer, pass string }{
		{"forged", "alice", string(forged)},
		{"expired", "alice", expired},
		{"another buyer's", "mallory", pass},
		{"signed with another secret", "alice", otherSale},
		{"garbage", "alice", "not-a-pass"},
	} {
		if a := s.buyWithPass(2, c.buyer, c.pass); a.status != http.StatusForbidden || a.code != "pass_invalid" {
			t.Fatalf("%s pass: want 403 pass_invalid, got %d %s", c.name, a.status, a.code)
		}
	}
	if a := s.buyWithPass(2, "alice", pass); a.status != http.StatusCreated {
		t.Fatalf("purchase with the pass: want 201, got %d %s", a.status, a.code)
	}
	if a := s.audit(); a.orders != 1 {
		t.Fatalf("refused passes must buy nothing: want 1 order, got %d", a.orders)
	}
	if p := s.poll(0, j.body.QueueID+"x"); p.status != http.StatusNotFound || p.code != "queue_not_found" {
		t.Fatalf("a tampered queue id: want 404 queue_not_found, got %d %s", p.status, p.code)
	}
}

func TestQueue_Off_NoPassNeededAndNoQueue(t *testing.T) {
	t.Parallel()
	s := newTestSale(t, 5)
	if a := s.buyWithPass(1, "bob", ""); a.status != http.StatusCreated {
		t.Fatalf("without a waiting room a purchase needs no pass: got %d %s", a.status, a.code)
	}
	if j := s.join(0, "bob"); j.status != http.StatusNotFound || j.code != "queue_not_found" {
		t.Fatalf("join without a waiting room: want 404 queue_not_found, got %d %s", j.status, j.code)
	}
	// Turned on live from the FlashSale: passes are needed from the next
	// request on.
	pod := s.pods[0].svc
	pod.apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second,
		WaitingRoom: statusreport.WaitingRoom{AdmitPerSecond: 5, Order: "Random", PassTTL: time.Minute}}, make(chan int64, 1))
	if wr := *pod.queue.settings.Load(); wr != (WaitingRoom{AdmitPerSecond: 5, Order: QueueRandom, PassTTL: time.Minute}) {
		t.Fatalf("live waiting room settings: got %+v", wr)
	}
	if a := s.buyWithPass(2, "bob", ""); a.status != http.StatusUnauthorized {
		t.Fatalf("after turning the waiting room on: want 401, got %d %s", a.status, a.code)
	}
	// And off again: everyone may buy.
	pod.apply(statusreport.Settings{Tickets: 5, LockTTL: time.Second}, make(chan int64, 1))
	if a := s.buyWithPass(3, "bob", ""); a.status != http.StatusCreated {
		t.Fatalf("after turning the waiting room off: want 201, got %d %s", a.status, a.code)
	}
}

func TestQueue_Window_JoinFromAndEndsAt(t *testing.T) {
	t.Parallel()
	now := time.Now()
	s := newQueueSale(t, 5, 1, withQueue(WaitingRoom{AdmitPerSecond: 5, JoinFrom: now.Add(time.Hour)}), func(c *Config) {
		c.Schedule.StartsAt = now.Add(2 * time.Hour)
	})
	if j := s.join(0, "early"); j.status != http.StatusForbidden || j.code != "sale_not_started" || j.header.Get("Retry-After") == "" {
		t.Fatalf("join before joinFrom: want 403 sale_not_started with Retry-After, got %d %s", j.status, j.code)
	}
	// The queue opens at joinFrom; before startsAt a FIFO place is known
	// and nobody is admitted.
	s.pods[0].svc.SetWaitingRoom(WaitingRoom{AdmitPerSecond: 5, JoinFrom: now.Add(-time.Minute)})
	j := s.join(0, "early")
	if j.status != http.StatusAccepted || j.body.State != "waiting" || j.body.Position == nil || *j.body.Position != 1 {
		t.Fatalf("join in the prequeue: want 202 waiting at position 1, got %d %s %+v", j.status, j.code, j.body)
	}
	if *j.body.EstimatedWaitSeconds < 3600 {
		t.Fatalf("the wait before startsAt must count the time to startsAt, got %d s", *j.body.EstimatedWaitSeconds)
	}
	// After endsAt: joins refused, polls closed.
	s.pods[0].svc.SetSchedule(Schedule{StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)})
	if p := s.poll(0, j.body.QueueID); p.status != http.StatusOK || p.body.State != "closed" {
		t.Fatalf("poll after endsAt: want closed, got %d %+v", p.status, p.body)
	}
	if j := s.join(0, "late"); j.status != http.StatusForbidden || j.code != "sale_ended" {
		t.Fatalf("join after endsAt: want 403 sale_ended, got %d %s", j.status, j.code)
	}
}

func TestQueue_Rejoin_SamePlace(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 5, 3, withQueue(WaitingRoom{AdmitPerSecond: 5}), func(c *Config) {
		c.Schedule.StartsAt = time.Now().Add(time.Hour) // nobody admitted: places stay put
	})
	first := map[string]queueBody{}
	for i := range 30 {
		b := fmt.Sprintf("b%d", i)
		j := s.join(i%3, b)
		if j.status != http.StatusAccepted {
			t.Fatalf("join %s: %d %s", b, j.status, j.code)
		}
		first[b] = j.body
	}
	for i := range 30 {
		b := fmt.Sprintf("b%d", i)
		j := s.join((i+1)%3, b) // through another pod
		if j.body.QueueID != first[b].QueueID || *j.body.Position != *first[b].Position {
			t.Fatalf("re-join of %s: want id %s at %d, got %s at %d", b, first[b].QueueID, *first[b].Position, j.body.QueueID, *j.body.Position)
		}
		if *j.body.Position != int64(i+1) {
			t.Fatalf("sequential joins: %s should be at %d, is at %d", b, i+1, *j.body.Position)
		}
	}
}

func TestQueue_KeyedRetryAfterThePassExpired_GetsItsOrderButBuysNothingNew(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 1, withQueue(WaitingRoom{AdmitPerSecond: 50}))
	signer := s.pods[0].svc.queue.signer
	valid := signer.pass("carol", time.Now().Add(time.Minute))
	expired := signer.pass("carol", time.Now().Add(-time.Second))
	h := func(pass, key string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + pass, idemKeyHeader: key}
	}
	first := s.post(0, "/v1/tickets/4/purchase", `{"buyerId":"carol"}`, h(valid, "k1"))
	if first.status != http.StatusCreated {
		t.Fatalf("with a valid pass: want 201, got %d %s", first.status, first.code)
	}
	retry := s.post(0, "/v1/tickets/4/purchase", `{"buyerId":"carol"}`, h(expired, "k1"))
	if retry.status != http.StatusCreated || retry.order.ID != first.order.ID || retry.header.Get(replayedHeader) != "true" {
		t.Fatalf("a keyed retry after the pass expired: want the same order replayed, got %d %s %+v", retry.status, retry.code, retry.order)
	}
	if fresh := s.post(0, "/v1/tickets/5/purchase", `{"buyerId":"carol"}`, h(expired, "k2")); fresh.status != http.StatusForbidden || fresh.code != "pass_invalid" {
		t.Fatalf("a new key with an expired pass: want 403 pass_invalid, got %d %s", fresh.status, fresh.code)
	}
	if a := s.audit(); a.orders != 1 {
		t.Fatalf("want 1 order, got %d", a.orders)
	}
}

func TestQueue_HoldsNeedAPassToo_ConfirmDoesNot(t *testing.T) {
	t.Parallel()
	s := newQueueSale(t, 10, 1, withQueue(WaitingRoom{AdmitPerSecond: 5}), func(c *Config) { c.HoldTTL = time.Minute })
	pass := s.pods[0].svc.queue.signer.pass("dave", time.Now().Add(time.Minute))
	for _, path := range []string{"/v1/tickets/3/hold", "/v1/holds"} {
		if a := s.post(0, path, `{"buyerId":"dave"}`, nil); a.status != http.StatusUnauthorized || a.code != "pass_required" {
			t.Fatalf("POST %s without a pass: want 401 pass_required, got %d %s", path, a.status, a.code)
		}
		other := s.pods[0].svc.queue.signer.pass("erin", time.Now().Add(time.Minute))
		if a := s.post(0, path, `{"buyerId":"dave"}`, map[string]string{"Authorization": "Bearer " + other}); a.status != http.StatusForbidden || a.code != "pass_invalid" {
			t.Fatalf("POST %s with another buyer's pass: want 403 pass_invalid, got %d %s", path, a.status, a.code)
		}
	}
	var hold struct {
		HoldID string `json:"holdId"`
	}
	req, _ := http.NewRequest(http.MethodPost, s.pods[0].srv.URL+"/v1/tickets/3/hold", strings.NewReader(`{"buyerId":"dave"}`))
	req.Header.Set("Authorization", "Bearer "+pass)
	resp, err := s.client.Do(req)
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
	if a := s.post(0, "/v1/holds/"+hold.HoldID+"/confirm", `{"buyerId":"dave","paymentRef":"p-1"}`, nil); a.status != http.StatusCreated {
		t.Fatalf("confirm without a pass: want 201, got %d %s", a.status, a.code)
	}
}

func TestQueue_EverySeatHeld_SoldOutUntilTheHoldsExpire(t *testing.T) {
	t.Parallel()
	// One active buyer at most: "first" is let in, "waits" waits.
	s := newQueueSale(t, 2, 2, withQueue(WaitingRoom{AdmitPerSecond: 1000, MaxActiveBuyers: 1}), func(c *Config) { c.HoldTTL = 2 * time.Second })
	signer := s.pods[0].svc.queue.signer
	s.join(0, "first")
	waiting := s.join(1, "waits")
	for seat, buyer := range map[int]string{1: "h1", 2: "h2"} {
		pass := signer.pass(buyer, time.Now().Add(time.Minute))
		path := fmt.Sprintf("/v1/tickets/%d/hold", seat)
		if a := s.post(0, path, fmt.Sprintf(`{"buyerId":%q}`, buyer), map[string]string{"Authorization": "Bearer " + pass}); a.status != http.StatusCreated {
			t.Fatalf("hold of seat %d: want 201, got %d %s", seat, a.status, a.code)
		}
	}
	var j queueAnswer
	testservers.Eventually(t, time.Second, "joins refused while every seat is held", func() bool {
		j = s.join(1, "late")
		return j.status == http.StatusConflict
	})
	if j.code != "sold_out" || j.header.Get("Retry-After") != "5" {
		t.Fatalf("join with every seat held: want 409 sold_out with Retry-After 5 (holds may end), got %d %s %q", j.status, j.code, j.header.Get("Retry-After"))
	}
	held := time.Now()
	testservers.Eventually(t, time.Second, "the waiting buyer told sold_out on every pod", func() bool {
		return s.poll(0, waiting.body.QueueID).body.State == stateSoldOut && s.poll(1, waiting.body.QueueID).body.State == stateSoldOut
	})
	// The holds expire by themselves: seats come back, joins and places too.
	testservers.Eventually(t, 5*time.Second, "a join accepted after the holds expired", func() bool {
		a := s.join(0, "late")
		return a.status == http.StatusAccepted || a.status == http.StatusOK
	})
	testservers.Eventually(t, time.Second, "the buyer waiting again on every pod", func() bool {
		return s.poll(0, waiting.body.QueueID).body.State == stateWaiting && s.poll(1, waiting.body.QueueID).body.State == stateWaiting
	})
	t.Logf("seats back to the queue %v after the holds were taken (holdTTL 2s)", time.Since(held))
}
