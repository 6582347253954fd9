package controllers

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// hibernated is nil when the sale's objects are in their hibernating form
// (want true) or their full form with replicas purchase pods (want false).
func hibernated(t *testing.T, sale *salesv1alpha1.FlashSale, want bool, replicas int32) error {
	t.Helper()
	ns, name := sale.Namespace, sale.Name
	s := saleNow(t, sale)
	if s.Status.Hibernated != want || s.Status.ObservedGeneration != s.Generation {
		return fmt.Errorf("status.hibernated %v (generation %d observed %d)", s.Status.Hibernated, s.Generation, s.Status.ObservedGeneration)
	}
	redis, purchase := &appsv1.Deployment{}, &appsv1.Deployment{}
	if err := get(t, ns, name+"-redis", redis); err != nil {
		return err
	}
	if err := get(t, ns, name+"-purchase", purchase); err != nil {
		return err
	}
	if err := get(t, ns, name+"-postgres", &appsv1.StatefulSet{}); err != nil {
		return fmt.Errorf("PostgreSQL must stay: %w", err)
	}
	pdbErr := get(t, ns, name+"-purchase", &policyv1.PodDisruptionBudget{})
	wantRedis, wantPurchase := int32(1), replicas
	if want {
		wantRedis, wantPurchase = 0, 1
		if !apierrors.IsNotFound(pdbErr) {
			return fmt.Errorf("a hibernating sale has no PDB: %v", pdbErr)
		}
	} else if pdbErr != nil {
		return fmt.Errorf("PDB: %w", pdbErr)
	}
	if r, p := ptr.Deref(redis.Spec.Replicas, -1), ptr.Deref(purchase.Spec.Replicas, -1); r != wantRedis || p != wantPurchase {
		return fmt.Errorf("redis replicas %d (want %d), purchase replicas %d (want %d)", r, wantRedis, p, wantPurchase)
	}
	return nil
}

func TestHibernation_EndedSaleHibernates_ExtendingEndsAtWakesIt(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "ends", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{
		// endsAt 4–5 s away: the first reconcile must see the sale full
		// before it ends, also on a loaded machine (2 s, truncated to the
		// second, left as little as 1 s, and the test failed under load).
		Tickets: 10, EndsAt: &metav1.Time{Time: time.Now().Add(5 * time.Second).Truncate(time.Second)},
		PurchaseAPI: salesv1alpha1.PurchaseAPISpec{Replicas: ptr.To[int32](3)}}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the full sale before endsAt", func() error { return hibernated(t, sale, false, 3) })
	testservers.Eventually(t, 10*time.Second, poll, "hibernation at endsAt, with no other event", func() error { return hibernated(t, sale, true, 3) })

	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.EndsAt = &metav1.Time{Time: time.Now().Add(time.Hour).Truncate(time.Second)}
	})
	testservers.Eventually(t, 10*time.Second, poll, "awake after endsAt moved", func() error { return hibernated(t, sale, false, 3) })
}

func TestHibernation_SoldOutLongerThanHibernateAfter_HibernatesUntilTicketsGrow(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "gone", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{
		Tickets: 10, HibernateAfter: &metav1.Duration{Duration: 2 * time.Second}}}
	if err := k8s.Create(context.Background(), sale); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the full sale", func() error { return hibernated(t, sale, false, 2) })

	// The pods report the last seat sold.
	r, err := statusreport.New(cfg, ns, "gone", "pod-a", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 10, Sold: 10}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(context.Background()); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "sold out noted", func() error {
		if saleNow(t, sale).Status.SoldOutSince == nil {
			return errors.New("no soldOutSince")
		}
		return nil
	})
	if err := hibernated(t, sale, false, 2); err != nil {
		t.Fatalf("sold out for less than hibernateAfter: %v", err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "hibernation after hibernateAfter, with no other event", func() error { return hibernated(t, sale, true, 2) })

	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets = 20 })
	testservers.Eventually(t, 10*time.Second, poll, "awake after tickets grew", func() error { return hibernated(t, sale, false, 2) })
	if saleNow(t, sale).Status.SoldOutSince != nil {
		t.Fatal("soldOutSince must be cleared once the sale is not sold out")
	}
}
