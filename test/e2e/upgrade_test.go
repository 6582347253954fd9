//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
)

// Issue 21, defect 1 and 9, on a real cluster: an operator upgrade while
// buyers buy. The previous release (make prev-image: PREV_REF's chart and
// image) is installed as its docs said, a sale created by it goes on sale,
// and while a storm runs the new release is installed as docs/install.md
// says (the CRD applied server-side with --force-conflicts, then helm
// upgrade: make deploy). The sale's Redis and PostgreSQL pods are not
// replaced nor restarted (the new operator's datastore templates wait:
// DatastoreUpdatePending), its purchase pods keep the sale's pinned image
// (any roll of them is one at a time), and buyers see 201 and 409, with 503
// unavailable from at most 1 stall in 100 answers.
//
// Serial (no t.Parallel): it swaps the operator every other test uses, and
// the parallel tests start only once it has put the new one back.
func TestOperatorUpgradeMidStormReplacesNoDatastore(t *testing.T) {
	prevChart, prevImg := os.Getenv("PREV_CHART"), os.Getenv("PREV_IMG")
	if prevChart == "" || prevImg == "" {
		t.Fatal("PREV_CHART and PREV_IMG must name the previous release: run the suite with make test-e2e (it runs make prev-image)")
	}
	restored := false
	t.Cleanup(func() {
		if !restored { // put the new release back for the tests that follow
			deployRelease(t, "MONITORING=true")
		}
	})
	t0 := time.Now()
	deployRelease(t, "CHART="+prevChart, "IMG="+prevImg, "MONITORING=false")
	t.Logf("TIMING: the previous release (%s) installed in %.0fs", prevImg, time.Since(t0).Seconds())

	ns := testNamespace(t, "e2e-upgrade")
	const name, seats = "upgrade", 3000
	b := startSaleOf(t, ns, name, seats, 2, false) // the previous CRD has no spec.frontDoor
	before, err := datastorePods(t.Context(), ns, name)
	if err != nil || len(before) != 2 {
		t.Fatalf("datastore pods before the upgrade: %v %v", before, err)
	}
	stormMu.Lock()
	defer stormMu.Unlock()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	st := startStorm(ctx, b, seats, 8)
	testservers.Eventually(t, 30*time.Second, pollInterval, "orders in the storm", func() error {
		if a := st.answers(); a["201 "] < 50 {
			return fmt.Errorf("answers so far: %v", a)
		}
		return nil
	})

	upgraded := time.Now()
	deployRelease(t, "MONITORING=true")
	restored = true
	t.Logf("TIMING: the new release installed %.0fs into the storm", time.Since(upgraded).Seconds())
	// Reconciled by the new operator (only it writes DatastoreUpdatePending),
	// both purchase pods ready. They keep the sale's pinned image (status.images:
	// a live sale's images never change with the operator); any roll of them
	// (a new template field) is one at a time.
	s := waitSale(t, ns, name, 4*time.Minute, "reconciled by the new operator, 2 purchase pods ready", func(s *salesv1alpha1.FlashSale) bool {
		if meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending) == nil || s.Status.ReadyReplicas != 2 {
			return false
		}
		pods, err := salePods(t.Context(), ns, name, "purchase")
		return err == nil && readyPods(pods) == 2 && len(pods) == 2
	})
	if c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionDatastoreUpdatePending); c.Status != "True" {
		t.Errorf("expected the new datastore templates to wait (DatastoreUpdatePending True), got %s: %s", c.Status, c.Message)
	} else {
		t.Logf("DatastoreUpdatePending: %s", c.Message)
	}
	time.AfterFunc(5*time.Second, cancel)
	answers := st.wait(t)
	t.Logf("answers during the upgrade: %v", answers)

	after, err := datastorePods(t.Context(), ns, name)
	if err != nil || fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("expected the same Redis and PostgreSQL pods, never restarted: %v -> %v (%v)", before, after, err)
	}
	st.check(t, answers, map[string]bool{"201 ": true, "409 ticket_locked": true, "409 ticket_sold": true}, 100)
}

// deployRelease runs `make deploy` without rebuilding (DEPLOY_LOAD=): the
// CRD applied as docs/install.md says, then helm upgrade of the release,
// waiting for the manager. args override the Makefile's variables.
func deployRelease(t *testing.T, args ...string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", append([]string{"-C", root, "deploy", "DEPLOY_LOAD=", "RELEASE=" + release,
		"NAMESPACE=" + operatorNamespace, "KUBE_CONTEXT=" + kubeContext}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make deploy %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
