//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
)

// Pausing a sale in the middle of a storm reaches the running purchase pods
// through their watch: no pod is replaced (same UIDs, same Deployment
// generation), and buyers only ever see 201, 409 and 503 sale_paused.
func TestPausingMidStormRestartsNoPodAndBuyersSeeSalePaused(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-pause")
	const name, seats = "paused", 2000
	b := startSale(t, ns, name, seats, 2)
	uids := func(ctx context.Context) ([]types.UID, error) {
		pods, err := salePods(ctx, ns, name, "purchase")
		var ids []types.UID
		for _, p := range pods {
			ids = append(ids, p.UID)
		}
		slices.Sort(ids)
		return ids, err
	}
	before, err := uids(t.Context())
	if err != nil || len(before) != 2 {
		t.Fatalf("purchase pods before the storm: %v %v", before, err)
	}
	dep := &appsv1.Deployment{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-purchase"}, dep); err != nil {
		t.Fatal(err)
	}
	generation := dep.Generation

	stormMu.Lock()
	defer stormMu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute) // ends 8 s after the pause
	defer cancel()
	// 8 buyers: enough to be mid-purchase when the pause lands, few enough
	// that the one 2-core node is not overloaded (which answers 503
	// unavailable, not what this test is about).
	st := startStorm(ctx, b, seats, 8)
	stormStart := time.Now()
	testservers.Eventually(t, 10*time.Second, pollInterval, "orders in the unpaused storm", func() error {
		if a := st.answers(); a["201 "] < 50 {
			return fmt.Errorf("answers so far: %v", a)
		}
		return nil
	})
	mustKubectl(t, nil, "-n", ns, "patch", "flashsale", name, "--type", "merge", "-p", `{"spec":{"paused":true}}`)
	paused := time.Now()
	time.AfterFunc(8*time.Second, cancel)
	answers := st.wait(t)
	t.Logf("answers (paused %.1fs into the storm, which went on for 8s): %v", paused.Sub(stormStart).Seconds(), answers)

	allowed := map[string]bool{"201 ": true, "409 ticket_locked": true, "409 ticket_sold": true,
		fmt.Sprintf("%d sale_paused", http.StatusServiceUnavailable): true}
	// On the one 2-core node, with other scenarios provisioning their sales
	// beside this storm, a purchase now and then outlasts its bound and
	// answers 503 unavailable (seen: 2 of 2,070 answers; 1 of 127 when
	// purchases took a second each; 2 of 124 together, 2.59 s each: one
	// slow PostgreSQL connect). That is load, not the pause, which
	// pods answer from memory: a few stalls are tolerated, and each answer
	// is logged with how long it took.
	st.check(t, answers, allowed, 200)
	if answers["503 sale_paused"] == 0 {
		t.Errorf("expected 503 sale_paused in the %.1fs of storm after the pause: %v", time.Since(paused).Seconds(), answers)
	}
	waitSale(t, ns, name, time.Minute, "Paused", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhasePaused && s.Status.ObservedGeneration == s.Generation
	})
	after, err := uids(t.Context())
	if err != nil || !slices.Equal(before, after) {
		t.Errorf("expected the same purchase pods after the pause, got %v -> %v (%v)", before, after, err)
	}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-purchase"}, dep); err != nil || dep.Generation != generation {
		t.Errorf("expected the purchase Deployment untouched by the pause: generation %d -> %d (%v)", generation, dep.Generation, err)
	}
}
