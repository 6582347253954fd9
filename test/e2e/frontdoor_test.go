//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/loadtest"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// join is POST /v1/queue through the Ingress, with a Flux-Order-Proof
// ("": none); it returns the status, the problem code and the headers.
func (b *buyer) join(ctx context.Context, buyerID, proof string) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+ingressAddr+"/v1/queue", strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyerID)))
	if err != nil {
		return 0, "", nil, err
	}
	req.Host = b.host
	req.Header.Set("Content-Type", "application/json")
	if proof != "" {
		req.Header.Set("Flux-Order-Proof", proof)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(raw, &p)
	return resp.StatusCode, p.Code, resp.Header, nil
}

// Scenario (issue 17): the front door through the kind Ingress (Traefik),
// with proof of work on.
//  1. A join through the Ingress answers 428 proof_required with a
//     challenge; solved, the join answers 202; its replay 428 proof_invalid.
//  2. The loadtest queue scenario's buyers solve every challenge through
//     the Ingress and sell the sale out; the audit is exact.
//  3. The per-client join cap counts the client Traefik forwards: with
//     spec.frontDoor.trustedProxies listing kind's pod network and 5 joins
//     a minute (live), this host's joins soon answer 429
//     too_many_requests with Retry-After; with no trusted proxy the same
//     forwarded joins are not capped per client (they would all share
//     Traefik's address).
func TestFrontDoorThroughTheIngressWithProofOfWork(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-door")
	const name, seats, buyers = "door", 50, 100
	b := startSale(t, ns, name, seats, 2)
	mustKubectl(t, nil, "-n", ns, "patch", "flashsale", name, "--type=merge", "-p",
		`{"spec":{"waitingRoom":{"admitPerSecond":50,"proofOfWork":{"difficulty":12}}}}`)
	ctx := t.Context()

	// 1. A challenge first, one join per solved challenge.
	var challenge http.Header
	testservers.Eventually(t, 30*time.Second, pollInterval, "every pod to ask a proof of work", func() error {
		for range 4 { // the Ingress spreads them over the pods
			code, pcode, h, err := b.join(ctx, "alice", "")
			if err != nil || code != http.StatusPreconditionRequired || pcode != "proof_required" || h.Get("Flux-Order-Challenge") == "" {
				return fmt.Errorf("%d %s %v", code, pcode, err)
			}
			challenge = h
		}
		return nil
	})
	if d := challenge.Get("Flux-Order-Difficulty"); d != "12" {
		t.Fatalf("difficulty %q, want 12", d)
	}
	proof, hashes := waitingroom.Solve(challenge.Get("Flux-Order-Challenge"), 12)
	t.Logf("solved alice's challenge: %d hashes", hashes)
	// A pod whose room was switched on a moment ago may answer 503 until
	// its first view; the proof is not spent then, and a buyer retries it.
	testservers.Eventually(t, 10*time.Second, pollInterval, "alice's join with her proof through the Ingress", func() error {
		code, pcode, _, err := b.join(ctx, "alice", proof)
		switch {
		case err == nil && (code == http.StatusAccepted || code == http.StatusOK):
			return nil
		case err == nil && code == http.StatusServiceUnavailable:
			return fmt.Errorf("%d %s (retried with the same proof)", code, pcode)
		}
		t.Fatalf("alice's join with her proof through the Ingress: %d %s %v", code, pcode, err)
		return nil
	})
	for range 2 { // both pods: the challenge was spent in the sale's Redis
		if code, pcode, h, err := b.join(ctx, "alice", proof); err != nil || code != http.StatusPreconditionRequired || pcode != "proof_invalid" || h.Get("Flux-Order-Challenge") == "" {
			t.Fatalf("the proof replayed: want 428 proof_invalid with a new challenge, got %d %s %v", code, pcode, err)
		}
	}

	// 2. The load test's buyers solve their challenges too.
	auditor := newAuditor(t, ns, name)
	cfg := b.loadConfig(loadtest.Queue)
	cfg.Buyers, cfg.Concurrency, cfg.Duration = buyers, 32, 3*time.Minute
	res := runLoad(t, cfg, nil)
	q := res.Summary.Queue
	if q == nil || q.Joined != buyers || q.Bought != seats || q.Unfinished != 0 || q.Solves < buyers {
		t.Fatalf("expected %d buyers to join, each after solving a challenge, and the seats sold; got %+v", buyers, q)
	}
	t.Logf("queue with proof of work: %d challenges solved, %.0f hashes and %.1f ms each", q.Solves, float64(q.SolveHashes)/float64(q.Solves), q.SolveMs/float64(q.Solves))
	audit(t, auditor, res.Created, b, true)

	// 3. The per-client cap counts the forwarded client, from trusted proxies only.
	// The trusted proxy is the Traefik pod itself: a NodePort connection
	// reaches it masqueraded as the node's address on the pod network
	// (10.244.0.1), so trusting all of 10.244.0.0/16 would trust the client
	// too, and nothing would be capped.
	ingressIP := strings.Trim(mustKubectl(t, nil, "-n", env("INGRESS_NAMESPACE", "traefik"), "get", "pods",
		"-o", "jsonpath={.items[0].status.podIP}"), "' \n")
	mustKubectl(t, nil, "-n", ns, "patch", "flashsale", name, "--type=merge", "-p",
		`{"spec":{"frontDoor":{"trustedProxies":["`+ingressIP+`/32"],"joinsPerClientPerMinute":5}}}`)
	testservers.Eventually(t, 30*time.Second, pollInterval, "this host's joins capped at 5 a minute per pod", func() error {
		code, pcode, h, err := b.join(ctx, "bob", "")
		if err != nil || code != http.StatusTooManyRequests || pcode != "too_many_requests" || h.Get("Retry-After") == "" {
			return fmt.Errorf("%d %s %v", code, pcode, err)
		}
		return nil
	})
	mustKubectl(t, nil, "-n", ns, "patch", "flashsale", name, "--type=merge", "-p",
		`{"spec":{"frontDoor":{"trustedProxies":[]}}}`)
	testservers.Eventually(t, 30*time.Second, pollInterval, "forwarded joins no longer capped per client", func() error {
		for i := range 12 {
			code, pcode, _, err := b.join(ctx, "bob", "")
			if err != nil || code != http.StatusPreconditionRequired {
				return fmt.Errorf("join %d: %d %s %v", i, code, pcode, err)
			}
		}
		return nil
	})
}
