package purchase_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/statusreport"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// joinWithProof is POST /v1/queue on pod with a Flux-Order-Proof header
// ("" none).
func (s *testSale) joinWithProof(pod int, buyer, proof string) queueAnswer {
	req, _ := http.NewRequest(http.MethodPost, s.Pods[pod].URL+"/v1/queue", strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyer)))
	if proof != "" {
		req.Header.Set("Flux-Order-Proof", proof)
	}
	return s.queueDo(req)
}

// Issue 17, proof of work on join, against real Redis: a join is answered
// a challenge first (428 proof_required); the solved challenge joins once;
// its replay on another pod is refused (the challenge was spent in the
// sale's Redis) with a fresh challenge; off, a join needs no proof.
func TestQueue_ProofOfWork_JoinAnswersAChallengeFirst_EachSolvesOneJoin(t *testing.T) {
	s := newQueueSale(t, 10, 2, withQueue(waitingroom.Settings{AdmitPerSecond: 1, ProofOfWork: 12}))
	first := s.joinWithProof(0, "alice", "")
	ch, d := first.Header.Get("Flux-Order-Challenge"), first.Header.Get("Flux-Order-Difficulty")
	if first.Status != http.StatusPreconditionRequired || first.Code != "proof_required" || ch == "" || d != "12" {
		t.Fatalf("a join without a proof: want 428 proof_required with a challenge, got %d %s %v", first.Status, first.Code, first.Header)
	}
	start := time.Now()
	proof, hashes := waitingroom.Solve(ch, 12)
	t.Logf("solved a 12-bit challenge in Go: %d hashes, %v", hashes, time.Since(start))
	if j := s.joinWithProof(0, "alice", proof); j.Status != http.StatusAccepted || j.Body.QueueID == "" {
		t.Fatalf("the join with its proof: want 202, got %d %s", j.Status, j.Code)
	}
	replay := s.joinWithProof(1, "alice", proof)
	if replay.Status != http.StatusPreconditionRequired || replay.Code != "proof_invalid" || replay.Header.Get("Flux-Order-Challenge") == "" {
		t.Fatalf("the proof replayed on another pod: want 428 proof_invalid with a new challenge, got %d %s", replay.Status, replay.Code)
	}
	rdb, err := purchase.NewRedis(purchase.Config{RedisURL: purchasetest.Redis().AdminURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	var keys []string
	ids := rdb.Keys(context.Background(), "fs:"+s.Cfg.Sale+":spent:*").Val()
	for _, k := range ids {
		if _, err := hex.DecodeString(strings.TrimPrefix(k, "fs:"+s.Cfg.Sale+":spent:")); err == nil {
			keys = append(keys, k)
		}
	}
	if len(keys) != 1 || rdb.TTL(context.Background(), keys[0]).Val() <= 0 {
		t.Fatalf("want one spent challenge in Redis with a TTL, got %v", ids)
	}
	s.Pods[0].Svc.Queue.Set(waitingroom.Settings{AdmitPerSecond: 1})
	if j := s.joinWithProof(0, "bob", ""); j.Status != http.StatusAccepted {
		t.Fatalf("proof of work off (live): want 202 without a proof, got %d %s", j.Status, j.Code)
	}
}

// The page solves the challenge itself: the join button works with proof
// of work on, and the solve is timed in headless Chromium, with WebCrypto
// (127.0.0.1 is a secure context) and with the bundled SHA-256 (what a
// plain-http page uses), at the documented difficulties. Both find the
// nonce Go finds, and the bundled SHA-256 matches the standard vectors.
func TestBrowser_ProofOfWork_PageSolvesTheChallenge_SolveTimed(t *testing.T) {
	tab := newTab(t, 2*time.Minute)
	s := newQueueSale(t, 20, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 5, ProofOfWork: 16}), func(c *purchase.Config) {
		c.DisplayName = "PoW test"
	})
	openSalePage(t, tab, s.Pods[0].URL+"/", "pat")
	run(t, tab, "join: the page solves, joins, is admitted",
		chromedp.WaitVisible(chromedp.CSS(`[data-action="join"]`)),
		chromedp.Click(chromedp.CSS(`[data-action="join"]`)),
		chromedp.Poll[chromedp.Void](`document.getElementById('queue').hidden && !document.getElementById('notice').hidden`,
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second)))
	ms := eval[string](t, tab, `document.documentElement.dataset.powMs`)
	engine := eval[string](t, tab, `document.documentElement.dataset.powEngine`)
	hashes := eval[string](t, tab, `document.documentElement.dataset.powHashes`)
	t.Logf("the page solved its 16-bit join challenge with %s: %s hashes in %s ms", engine, hashes, ms)
	if engine != "webcrypto" {
		t.Errorf("127.0.0.1 is a secure context: want WebCrypto, got %q", engine)
	}

	for _, v := range [][2]string{
		{"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{strings.Repeat("a", 1000), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"},
	} {
		got := eval[string](t, tab, fmt.Sprintf(`Array.from(FluxPow.sha256(new TextEncoder().encode(%q))).map(b => b.toString(16).padStart(2, '0')).join('')`, v[0]))
		if got != v[1] {
			t.Fatalf("bundled SHA-256 of %d bytes: %s, want %s", len(v[0]), got, v[1])
		}
	}
	signer := s.Pods[0].Svc.Queue.Signer()
	for _, d := range []int{12, 16, 18} {
		for _, engine := range []string{"webcrypto", "js"} {
			var total float64
			var totalHashes int
			const rounds = 3
			for i := range rounds {
				ch := signer.Challenge(fmt.Sprintf("buyer-%d", i), d, time.Now().Add(time.Minute))
				want, _ := waitingroom.Solve(ch, d)
				type solved struct {
					Proof  string  `json:"proof"`
					Hashes int     `json:"hashes"`
					Ms     float64 `json:"ms"`
				}
				r, err := chromedp.Run(tab, chromedp.Evaluate[solved](fmt.Sprintf(`FluxPow.solve(%q, %d, {engine: %q})`, ch, d, engine), chromedp.EvalAwaitPromise))
				if err != nil {
					t.Fatal(err)
				}
				if r.Proof != want {
					t.Fatalf("%s at %d bits: proof %q, Go finds %q", engine, d, r.Proof, want)
				}
				total += r.Ms
				totalHashes += r.Hashes
			}
			t.Logf("SOLVE headless Chromium, %-9s %2d bits: %8.0f hashes/join, %7.0f ms/join, %5.2f M hashes/s (mean of %d)",
				engine, d, float64(totalHashes)/rounds, total/rounds, float64(totalHashes)/total/1000, rounds)
		}
	}
}

// spec.waitingRoom.proofOfWork is live.
func TestQueue_ProofOfWork_LiveFromTheFlashSale(t *testing.T) {
	s := newTestSale(t, 10)
	s.Pods[0].Svc.Apply(statusreport.Settings{Tickets: 10, LockTTL: time.Second, WaitingRoom: &salesv1alpha1.WaitingRoomSpec{
		AdmitPerSecond: 5, ProofOfWork: &salesv1alpha1.ProofOfWorkSpec{Difficulty: 14}}})
	if got := s.Pods[0].Svc.Queue.Settings().ProofOfWork; got != 14 {
		t.Fatalf("live proof of work: %d bits, want 14", got)
	}
}
