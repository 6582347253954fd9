package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// Issue 21, defect 6: a deleted reporter Lease is re-created at once (the
// pods' Role may only update it, so without it no pod reports and the
// sale's counts freeze). Nothing else changes meanwhile: only the Lease's
// deletion can trigger the reconcile that brings it back.
func TestReconcile_DeletedReporterLease_IsRecreated(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "lease", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	name := specs.LeaseName(sale)
	lease := &coordinationv1.Lease{}
	testservers.Eventually(t, 10*time.Second, poll, "the reporter Lease", func() error { return get(t, ns, name, lease) })
	uid := lease.UID
	// Let the creation's reconciles end: no reconcile for a second (the
	// controller's own counter). From then on nothing but the deletion
	// can start one.
	last, quietSince := reconciles(t), time.Now()
	testservers.Eventually(t, 20*time.Second, 100*time.Millisecond, "the sale's reconciles to settle", func() error {
		if n := reconciles(t); n != last {
			last, quietSince = n, time.Now()
		}
		if time.Since(quietSince) < time.Second {
			return errors.New("reconciled within the last second")
		}
		return nil
	})
	if err := k8s.Delete(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the reporter Lease re-created", func() error {
		l := &coordinationv1.Lease{}
		if err := get(t, ns, name, l); err != nil {
			return err
		}
		if l.UID == uid {
			return errors.New("the deleted Lease is still there")
		}
		return nil
	})
}

// reconciles is how many reconciles the flashsale controller has run.
func reconciles(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "flashsale" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n
}

// Issue 21, defect 6: a provisioned sale whose pods stop reporting says so
// (StatusStale and a Warning event) once the bound has passed, and a report
// clears it. The clock is moved past the bound; a spec change makes the
// controller look (its own requeue would, 30 s later).
func TestReconcile_NoReportForLongerThanTheBound_StatusStale_AReportClearsIt(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "stale", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]client.Object{"stale-redis": &appsv1.Deployment{}, "stale-postgres": &appsv1.StatefulSet{}, "stale-purchase": &appsv1.Deployment{}} {
		markReady(t, ns, name, obj)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)
	staleIs := func(want metav1.ConditionStatus, reason string) func() error {
		return func() error {
			c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionStatusStale)
			if c == nil || c.Status != want || c.Reason != reason {
				return fmt.Errorf("StatusStale is %+v", c)
			}
			return nil
		}
	}
	testservers.Eventually(t, 10*time.Second, poll, "StatusStale False while the bound has not passed", staleIs(metav1.ConditionFalse, "Reporting"))

	later := time.Now().Add(StatusStaleAfter + time.Second)
	testClock.Store(&later)
	t.Cleanup(func() { testClock.Store(nil) })
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.DisplayName = "Stale Show" })
	testservers.Eventually(t, 10*time.Second, poll, "StatusStale True past the bound", staleIs(metav1.ConditionTrue, "NoRecentReport"))
	testservers.Eventually(t, 10*time.Second, poll, "a StatusStale Warning event", func() error { return findEvent(t, ns, "StatusStale") })

	testClock.Store(nil)
	r, err := statusreport.New(cfg, ns, "stale", "pod-a", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 10, Sold: 1}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "a report clears StatusStale", staleIs(metav1.ConditionFalse, "Reporting"))
}

// Review finding: StatusStale needed Ready True, so while an object failed
// to apply (Ready False, ApplyFailed) a sale whose pods had stopped
// reporting said "Reporting" however long they had been silent. The clock
// now runs on the sale being provisioned with its purchase pods ready.
func TestReconcile_ApplyFailed_NoReportForLongerThanTheBound_StillStatusStale(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	sale := onSale(t, ns, "silent", func(s *salesv1alpha1.FlashSale) { s.Spec.Ingress = &salesv1alpha1.IngressSpec{Host: "a.example"} })
	refuseIngresses(t, ns)
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Ingress.Host = "b.example" })
	testservers.Eventually(t, 10*time.Second, poll, "Ready ApplyFailed", func() error {
		if c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionReady); c == nil || c.Reason != "ApplyFailed" {
			return fmt.Errorf("Ready %+v", c)
		}
		return nil
	})
	staleIs := func(want metav1.ConditionStatus, reason string) func() error {
		return func() error {
			c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionStatusStale)
			if c == nil || c.Status != want || c.Reason != reason {
				return fmt.Errorf("StatusStale is %+v", c)
			}
			return nil
		}
	}

	later := time.Now().Add(10 * time.Minute)
	testClock.Store(&later)
	t.Cleanup(func() { testClock.Store(nil) })
	reconcileNow(t, sale)
	testservers.Eventually(t, 10*time.Second, poll, "StatusStale True past the bound, Ready still ApplyFailed", staleIs(metav1.ConditionTrue, "NoRecentReport"))

	testClock.Store(nil)
	r, err := statusreport.New(cfg, ns, "silent", "pod-a", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 10, Sold: 1}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "a report clears StatusStale", staleIs(metav1.ConditionFalse, "Reporting"))
}

// The reconcile that makes a sale provisioned schedules its own StatusStale
// check: pods that never report are noticed with no other event (the
// wake-up was computed from the status before that reconcile, in which no
// clock ran). Real time: StatusStaleAfter.
func TestReconcile_PodsNeverReport_StatusStaleWithNoOtherEvent(t *testing.T) {
	ns := newNamespace(t)
	sale := onSale(t, ns, "mute")
	testservers.Eventually(t, StatusStaleAfter+15*time.Second, 200*time.Millisecond, "StatusStale True", func() error {
		c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionStatusStale)
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != "NoRecentReport" {
			return fmt.Errorf("StatusStale is %+v", c)
		}
		return nil
	})
}
