package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// asPurchasePod is the API as the sale's purchase pods see it: through
// their ServiceAccount and the Role the operator gave it.
func asPurchasePod(ns, sale string) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: fmt.Sprintf("system:serviceaccount:%s:%s-purchase", ns, sale)}
	return c
}

func TestPurchaseRole_AllowsOnlyItsOwnSale(t *testing.T) {
	ns := newNamespace(t)
	mine := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	other := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	for _, s := range []*salesv1alpha1.FlashSale{mine, other} {
		if err := k8s.Create(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	testservers.Eventually(t, 10*time.Second, poll, "role binding", func() error { return get(t, ns, "mine-purchase", &rbacv1.RoleBinding{}) })
	var sold atomic.Int64
	sold.Store(3)
	counts := func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 10, Sold: sold.Load()}, nil
	}

	r, err := statusreport.New(asPurchasePod(ns, "mine"), ns, "mine", "pod-1", counts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(context.Background()); err != nil {
		t.Fatalf("the pods must be allowed to report their own sale: %v", err)
	}
	intruder, err := statusreport.New(asPurchasePod(ns, "mine"), ns, "other", "pod-1", counts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := intruder.ReportOnce(context.Background()); !apierrors.IsForbidden(err) {
		t.Fatalf("the pods must not write another sale's status, got %v", err)
	}

	// The pods read their settings at start and follow them live.
	if st, err := r.Get(context.Background()); err != nil || st.Tickets != mine.Spec.Tickets || st.LockTTL != 5*time.Second {
		t.Fatalf("the pods must read their own sale's settings: %+v %v", st, err)
	}
	got := make(chan statusreport.Settings, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Follow(ctx, func(s statusreport.Settings) { got <- s })
	if s := <-got; s.Paused {
		t.Fatalf("initial settings %+v", s)
	}
	patchSpec(t, mine, func(s *salesv1alpha1.FlashSale) {
		s.Spec.Paused, s.Spec.MaxTicketsPerBuyer, s.Spec.Tickets = true, 3, s.Spec.Tickets+5
		s.Spec.LockTTL = &metav1.Duration{Duration: 250 * time.Millisecond}
	})
	want := statusreport.Settings{Paused: true, MaxTicketsPerBuyer: 3, Tickets: mine.Spec.Tickets + 5, LockTTL: 250 * time.Millisecond}
	select {
	case s := <-got:
		if s != want {
			t.Fatalf("want %+v, got %+v", want, s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the change did not reach the pods' watch")
	}

	// The Lease election works with the pods' permissions.
	sold.Store(5)
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	go r.Run(rctx)
	testservers.Eventually(t, 10*time.Second, poll, "the elected reporter writes counts", func() error {
		s := saleNow(t, mine)
		if s.Status.LastReportTime == nil || s.Status.Sold == nil || *s.Status.Sold != 5 {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})
}

// applyStatusAsPod server-side-applies status fields as the sale's purchase
// pods could, with their identity and field owner.
func applyStatusAsPod(t *testing.T, sale *salesv1alpha1.FlashSale, status map[string]any) error {
	t.Helper()
	dyn, err := dynamic.NewForConfig(asPurchasePod(sale.Namespace, sale.Name))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": salesv1alpha1.GroupVersion.String(), "kind": salesv1alpha1.FlashSaleKind,
		"metadata": map[string]any{"name": sale.Name, "namespace": sale.Namespace},
		"status":   status,
	}}
	_, err = dyn.Resource(salesv1alpha1.GroupVersion.WithResource(salesv1alpha1.FlashSaleResource)).Namespace(sale.Namespace).
		ApplyStatus(context.Background(), sale.Name, u, metav1.ApplyOptions{FieldManager: statusreport.FieldOwner, Force: true})
	return err
}

// Issue 21, defect 7: the pods' status patch could write the fields the
// operator owns; a soldOutSince in the past hibernated the sale at once.
// The chart's ValidatingAdmissionPolicy (config/policy, installed by
// TestMain) lets them write only their counts, and checks those.
func TestPurchasePods_MayWriteOnlyTheirCounts_CheckedBeforeTheyLand(t *testing.T) {
	ns := newNamespace(t)
	sale := onSale(t, ns, "guarded")
	report := func(sold, held, available int64) map[string]any {
		return map[string]any{"sold": sold, "held": held, "available": available, "lastReportTime": time.Now().UTC().Format(time.RFC3339)}
	}
	if err := applyStatusAsPod(t, sale, report(4, 1, 5)); err != nil {
		t.Fatalf("the pods must be allowed to report their counts: %v", err)
	}
	longAgo := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		name   string
		status map[string]any
		want   string
	}{
		{"soldOutSince", map[string]any{"soldOutSince": longAgo}, "operator owns"},
		{"phase", map[string]any{"phase": "Ended"}, "operator owns"},
		{"hibernated", map[string]any{"hibernated": true}, "operator owns"},
		{"conditions", map[string]any{"conditions": []any{map[string]any{"type": "Ready", "status": "False", "reason": "X", "message": "", "lastTransitionTime": longAgo}}}, "operator owns"},
		{"a negative count", report(4, -1, 7), "negative"},
		{"more sold than tickets", report(11, 0, 0), "cannot exceed spec.tickets"},
		{"sold shrinking while on sale", report(3, 0, 7), "cannot shrink"},
		{"sold shrinking by more than the cancellations", withCancelled(report(2, 0, 8), 1), "cannot shrink"},
		{"a negative cancelled", withCancelled(report(4, 1, 5), -1), "negative"},
	} {
		var err error
		testservers.Eventually(t, 10*time.Second, poll, c.name+" refused (the policy is in force)", func() error {
			if err = applyStatusAsPod(t, sale, c.status); err == nil {
				return errors.New("accepted")
			}
			return nil
		})
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want a refusal saying %q, got %v", c.name, c.want, err)
		}
	}
	s := saleNow(t, sale)
	if s.Status.SoldOutSince != nil || s.Status.Hibernated || s.Status.Phase != salesv1alpha1.PhaseOnSale || *s.Status.Sold != 4 {
		t.Fatalf("the refused writes must not land: %+v", s.Status)
	}
	// A cancellation (issue 19) makes sold shrink by what cancelled grows.
	if err := applyStatusAsPod(t, sale, withCancelled(report(3, 1, 6), 1)); err != nil {
		t.Fatalf("a cancelled order gives its seat back: %v", err)
	}
	if err := applyStatusAsPod(t, sale, withCancelled(report(4, 1, 5), 0)); err == nil || !strings.Contains(err.Error(), "cancelled cannot shrink") {
		t.Fatalf("cancelled shrinking while on sale: want a refusal, got %v", err)
	}
	// The reported counts keep working, including the last seat sold.
	if err := applyStatusAsPod(t, sale, withCancelled(report(10, 0, 0), 1)); err != nil {
		t.Fatalf("selling out is a report like any other: %v", err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseSoldOut, 10*time.Second)
	// A cancellation after the sell-out reopens the sale.
	if err := applyStatusAsPod(t, sale, withCancelled(report(9, 0, 1), 2)); err != nil {
		t.Fatalf("a cancellation after the sell-out: %v", err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)
}

// withCancelled is a report with status.cancelled.
func withCancelled(r map[string]any, cancelled int64) map[string]any {
	r["cancelled"] = cancelled
	return r
}
