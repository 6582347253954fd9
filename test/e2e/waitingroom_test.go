//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/loadtest"
)

// Scenario: a running sale gets a waiting room and seat holds live (no pod
// restarts); 600 buyers queue through the Ingress with the loadtest queue
// scenario, hold a seat with their passes, confirm it and sell out its 200
// seats. The audit is exact, nobody is passed over (0 FIFO inversions), and
// the status and `kubectl get flashsales` show the queue.
//
// Not parallel: it runs alone, before the other scenarios. Beside their
// provisioning and storms the one 2-core node starved this sale's
// PostgreSQL (10m CPU requested) until its TLS handshakes timed out, and
// admitted buyers got 503s instead of seats; the exact audit this test
// makes is about the waiting room, not about that overload.
func TestAWaitingRoomSellsOutASaleThroughTheIngressInJoinOrder(t *testing.T) {
	ns := testNamespace(t, "e2e-queue")
	const name, seats, buyers = "queued", 200, 600
	b := startSale(t, ns, name, seats, 2)
	before, err := podUIDs(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}

	mustKubectl(t, nil, "-n", ns, "patch", "flashsale", name, "--type=merge", "-p",
		`{"spec":{"waitingRoom":{"admitPerSecond":100},"holdTTL":"2m"}}`)
	// Read-only first: a purchase probe sent to a pod that has not applied
	// the change yet would buy a seat. Every pod applies the waiting room
	// and the hold TTL together (one settings update), and /v1/sale reports
	// them.
	testservers.Eventually(t, 30*time.Second, pollInterval, "every purchase pod to report the waiting room and holds", func() error {
		for range 6 { // several answers: the Ingress spreads them over the pods
			code, body, err := b.do(t.Context(), http.MethodGet, "/v1/sale", "")
			if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"enabled":true`) ||
				!strings.Contains(string(body), `"holdTTL":120`) {
				return fmt.Errorf("%d %s %v", code, body, err)
			}
		}
		return nil
	})
	for range 4 {
		code, body, err := b.post(t.Context(), "/v1/purchase", `{"buyerId":"no-pass"}`)
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("a purchase without a pass: expected 401 pass_required from every pod, got %d %s %v", code, body, err)
		}
	}

	auditor := newAuditor(t, ns, name)
	cfg := b.loadConfig(loadtest.Queue)
	cfg.Buyers, cfg.Concurrency, cfg.Duration = buyers, 64, 4*time.Minute
	// Admitted buyers check out as the sale page does: hold any seat,
	// think, confirm.
	cfg.QueueHolds, cfg.ThinkTime = true, 200*time.Millisecond
	res := runLoad(t, cfg, nil)
	q := res.Summary.Queue
	if q == nil {
		t.Fatal("the queue scenario reported no queue summary")
	}
	if q.Joined != buyers || q.Bought != seats || q.Bought+q.SoldOut != buyers || q.Unfinished != 0 {
		t.Errorf("expected %d buyers to join, %d to buy and the rest to be told sold out; got %+v", buyers, seats, *q)
	}
	if q.FIFOInversions != 0 {
		t.Errorf("expected no FIFO inversion across the purchase pods, got %d", q.FIFOInversions)
	}
	t.Logf("queue: time in queue p50 %.0f ms p99 %.0f ms, admitted %.1f/s", q.TimeInQueue.P50Ms, q.TimeInQueue.P99Ms, q.AdmittedPerSecond)
	if r := audit(t, auditor, res.Created, b, true); r.Orders != seats {
		t.Errorf("expected %d orders, got %d", seats, r.Orders)
	}

	s := waitSale(t, ns, name, 30*time.Second, "reporting the waiting room", func(s *salesv1alpha1.FlashSale) bool {
		wr := s.Status.WaitingRoom
		return wr != nil && wr.Admitted >= seats && wr.Admitted+wr.Waiting == buyers && s.Status.Phase == salesv1alpha1.PhaseSoldOut
	})
	t.Logf("status.waitingRoom %+v", *s.Status.WaitingRoom)
	out := mustKubectl(t, nil, "-n", ns, "get", "flashsales")
	if rows := kubectlTable(out); len(rows) != 1 || rows[0]["WAITING"] != fmt.Sprint(s.Status.WaitingRoom.Waiting) {
		t.Errorf("kubectl get flashsales: expected WAITING %d, got:\n%s", s.Status.WaitingRoom.Waiting, out)
	}
	if after, err := podUIDs(t.Context(), ns, name); err != nil || after != before {
		t.Errorf("turning the waiting room on must not restart pods: before %s, after %s (%v)", before, after, err)
	}
}

// podUIDs is the sale's purchase pods, as a sorted list of UIDs.
func podUIDs(ctx context.Context, ns, name string) (string, error) {
	pods, err := salePods(ctx, ns, name, "purchase")
	var ids []string
	for _, p := range pods {
		ids = append(ids, string(p.UID))
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), err
}
