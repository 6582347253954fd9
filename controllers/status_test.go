package controllers

import (
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/event"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

func TestPhase_FromReadinessClockSwitchAndCounts(t *testing.T) {
	now := time.Date(2027, 1, 10, 11, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	cases := []struct {
		name            string
		spec            salesv1alpha1.FlashSaleSpec
		sold, available *int64
		ready, wasReady bool
		want            salesv1alpha1.Phase
	}{
		{"not ready yet", salesv1alpha1.FlashSaleSpec{Tickets: 10}, nil, nil, false, false, salesv1alpha1.PhaseProvisioning},
		{"was ready, not any more", salesv1alpha1.FlashSaleSpec{Tickets: 10}, nil, nil, false, true, salesv1alpha1.PhaseDegraded},
		{"before the window", salesv1alpha1.FlashSaleSpec{Tickets: 10, StartsAt: at(time.Hour)}, nil, nil, true, false, salesv1alpha1.PhaseScheduled},
		{"in the window", salesv1alpha1.FlashSaleSpec{Tickets: 10, StartsAt: at(-time.Hour), EndsAt: at(time.Hour)}, nil, nil, true, false, salesv1alpha1.PhaseOnSale},
		{"at endsAt", salesv1alpha1.FlashSaleSpec{Tickets: 10, EndsAt: at(0)}, nil, nil, true, false, salesv1alpha1.PhaseEnded},
		{"paused", salesv1alpha1.FlashSaleSpec{Tickets: 10, Paused: true}, nil, nil, true, false, salesv1alpha1.PhasePaused},
		{"ended beats paused", salesv1alpha1.FlashSaleSpec{Tickets: 10, Paused: true, EndsAt: at(-time.Minute)}, nil, nil, true, false, salesv1alpha1.PhaseEnded},
		{"sold out", salesv1alpha1.FlashSaleSpec{Tickets: 10}, ptr.To[int64](10), ptr.To[int64](0), true, false, salesv1alpha1.PhaseSoldOut},
		{"sold out, then tickets grew", salesv1alpha1.FlashSaleSpec{Tickets: 20}, ptr.To[int64](10), ptr.To[int64](0), true, false, salesv1alpha1.PhaseOnSale},
	}
	for _, c := range cases {
		s := &salesv1alpha1.FlashSale{Spec: c.spec, Status: salesv1alpha1.FlashSaleStatus{Sold: c.sold, Available: c.available}}
		if got := phase(s, c.ready, c.wasReady, now); got != c.want {
			t.Errorf("%s: phase %s, want %s", c.name, got, c.want)
		}
	}
}

func TestNextBoundary_RequeuesAtStartThenEnd(t *testing.T) {
	now := time.Now()
	s := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{StartsAt: &metav1.Time{Time: now.Add(time.Minute)}, EndsAt: &metav1.Time{Time: now.Add(time.Hour)}}}
	if d := nextBoundary(s, now); d != time.Minute {
		t.Errorf("before start: %v", d)
	}
	if d := nextBoundary(s, now.Add(2*time.Minute)); d != 58*time.Minute {
		t.Errorf("after start: %v", d)
	}
	if d := nextBoundary(s, now.Add(2*time.Hour)); d != 0 {
		t.Errorf("after end: %v", d)
	}
}

// rolledOutDeployment is a Deployment of one replica whose rollout is
// complete.
func rolledOutDeployment() *appsv1.Deployment {
	return &appsv1.Deployment{Status: appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, AvailableReplicas: 1}}
}

// A spec change while the sale provisions rolls its Deployments: the sale
// stays Provisioning until no pod of the template before is left, even
// with ready pods; once provisioned, a rollout keeps it on sale.
func TestComputeStatus_ProvisioningWaitsForTheRollout_ALiveSaleDoesNot(t *testing.T) {
	rolling := rolledOutDeployment()
	rolling.Generation, rolling.Status.ObservedGeneration = 2, 2
	rolling.Spec.Replicas = ptr.To[int32](2)
	// One pod of the new template ready, two of the old one still running.
	rolling.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1, ReadyReplicas: 3, AvailableReplicas: 3}
	notObserved := rolledOutDeployment()
	notObserved.Generation, notObserved.Status.ObservedGeneration = 3, 2
	sale := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	for _, tc := range []struct {
		name         string
		redis, purch *appsv1.Deployment
		condition    string
	}{
		{"the purchase pods roll", rolledOutDeployment(), rolling, salesv1alpha1.ConditionPurchaseAPIReady},
		{"Redis rolls", rolling, rolledOutDeployment(), salesv1alpha1.ConditionRedisReady},
		{"a new generation not yet observed", rolledOutDeployment(), notObserved, salesv1alpha1.ConditionPurchaseAPIReady},
	} {
		obs := observed{redis: tc.redis, purchase: tc.purch, postgres: &appsv1.StatefulSet{Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}}}
		sale.Status.Phase = salesv1alpha1.PhaseProvisioning
		st := computeStatus(sale, obs, nil, time.Now())
		c := meta.FindStatusCondition(st.Conditions, tc.condition)
		if st.Phase != salesv1alpha1.PhaseProvisioning || c.Status != metav1.ConditionFalse || c.Reason != "RollingOut" {
			t.Errorf("%s while provisioning: phase %s, %s %+v; want Provisioning, False/RollingOut", tc.name, st.Phase, tc.condition, c)
		}
		sale.Status.Phase = salesv1alpha1.PhaseOnSale
		if st := computeStatus(sale, obs, nil, time.Now()); st.Phase != salesv1alpha1.PhaseOnSale {
			t.Errorf("%s on a live sale: phase %s, want OnSale", tc.name, st.Phase)
		}
	}
	sale.Status.Phase = salesv1alpha1.PhaseProvisioning
	done := observed{redis: rolledOutDeployment(), purchase: rolledOutDeployment(), postgres: &appsv1.StatefulSet{Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}}}
	if st := computeStatus(sale, done, nil, time.Now()); st.Phase != salesv1alpha1.PhaseOnSale {
		t.Errorf("every rollout done: phase %s, want OnSale", st.Phase)
	}
}

func TestComputeStatus_GrowthKeepsOnSale_SeededWhenThePodsReportIt(t *testing.T) {
	obs := observed{redis: rolledOutDeployment(), purchase: rolledOutDeployment(),
		postgres: &appsv1.StatefulSet{Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}}}
	sale := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{Tickets: 20}, Status: salesv1alpha1.FlashSaleStatus{
		Phase: salesv1alpha1.PhaseOnSale, Sold: ptr.To[int64](4), Available: ptr.To[int64](6)}}

	st := computeStatus(sale, obs, nil, time.Now())
	c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionInventorySeeded)
	if st.Phase != salesv1alpha1.PhaseOnSale || c.Status != metav1.ConditionFalse || c.Reason != "Growing" {
		t.Fatalf("while the pods seed 10 more seats: phase %s, InventorySeeded %+v; want OnSale, False/Growing", st.Phase, c)
	}
	sale.Status.Available = ptr.To[int64](16)
	st = computeStatus(sale, obs, nil, time.Now())
	if c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionInventorySeeded); st.Phase != salesv1alpha1.PhaseOnSale || c.Status != metav1.ConditionTrue {
		t.Fatalf("after the pods report 20 seats: phase %s, InventorySeeded %+v", st.Phase, c)
	}
	// The pods' report of the grown inventory is what triggers that reconcile.
	grown := sale.DeepCopy()
	sale.Status.Available = ptr.To[int64](6)
	if !reportMatters.Update(event.UpdateEvent{ObjectOld: sale, ObjectNew: grown}) {
		t.Fatal("a report of a larger inventory must reconcile the sale")
	}
	same := sale.DeepCopy()
	same.Status.Sold, same.Status.Available = ptr.To[int64](5), ptr.To[int64](5)
	if reportMatters.Update(event.UpdateEvent{ObjectOld: sale, ObjectNew: same}) {
		t.Fatal("a sale that changes nothing but the counts must cost no reconcile")
	}
}

func TestComputeStatus_StoredInventoryLargerThanSpec_DegradedSayingWhy(t *testing.T) {
	obs := observed{redis: rolledOutDeployment(), purchase: rolledOutDeployment(),
		postgres: &appsv1.StatefulSet{Status: appsv1.StatefulSetStatus{ReadyReplicas: 1}}}
	// Re-created with 100 tickets over a database of 500 seats, 40 sold.
	sale := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{Tickets: 100}, Status: salesv1alpha1.FlashSaleStatus{
		Sold: ptr.To[int64](40), Available: ptr.To[int64](460)}}
	st := computeStatus(sale, obs, nil, time.Now())
	c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionInventorySeeded)
	if st.Phase != salesv1alpha1.PhaseDegraded || c.Status != metav1.ConditionFalse || c.Reason != "StoredInventoryLarger" ||
		!strings.Contains(c.Message, "at least 500") {
		t.Fatalf("phase %s, InventorySeeded %+v: want Degraded and a message saying to set tickets to at least 500", st.Phase, c)
	}
}

func TestComputeStatus_ApplyFailures_ReadyFalseNamingEachObject(t *testing.T) {
	sale := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	st := computeStatus(sale, observed{}, []error{errors.New("apply StatefulSet x-postgres: boom"), errors.New("apply Ingress x: bang")}, time.Now())
	c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionReady)
	if c.Status != metav1.ConditionFalse || c.Reason != "ApplyFailed" || !strings.Contains(c.Message, "StatefulSet x-postgres") || !strings.Contains(c.Message, "Ingress x") {
		t.Fatalf("Ready %+v", c)
	}
}

// A sale that has been provisioned stays so whatever Ready says: ApplyFailed
// (Ready False) neither turns a readiness drop into Provisioning nor stops
// the StatusStale clock.
func TestComputeStatus_ApplyFailedSale_StaysProvisioned(t *testing.T) {
	now := time.Date(2027, 1, 10, 11, 0, 0, 0, time.UTC)
	since := metav1.NewTime(now.Add(-time.Hour))
	sale := &salesv1alpha1.FlashSale{Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}, Status: salesv1alpha1.FlashSaleStatus{
		Phase: salesv1alpha1.PhaseOnSale,
		Conditions: []metav1.Condition{
			{Type: salesv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: "ApplyFailed", LastTransitionTime: since},
			{Type: salesv1alpha1.ConditionPurchaseAPIReady, Status: metav1.ConditionTrue, Reason: "Ready", LastTransitionTime: since},
		}}}
	if st := computeStatus(sale, observed{}, []error{errors.New("apply Ingress x: refused")}, now); st.Phase != salesv1alpha1.PhaseDegraded {
		t.Errorf("nothing ready: phase %s, want Degraded", st.Phase)
	}
	// Degraded with its purchase pods ready: they should still report.
	pods := observed{purchase: &appsv1.Deployment{Status: appsv1.DeploymentStatus{ReadyReplicas: 1}}}
	st := computeStatus(sale, pods, nil, now)
	if c := meta.FindStatusCondition(st.Conditions, salesv1alpha1.ConditionStatusStale); st.Phase != salesv1alpha1.PhaseDegraded || c.Status != metav1.ConditionTrue {
		t.Errorf("Degraded, no report for an hour: phase %s, StatusStale %+v", st.Phase, c)
	}
	if at, ok := staleAt(sale); !ok || !at.Equal(since.Add(StatusStaleAfter)) {
		t.Errorf("staleAt %v %t, want %v", at, ok, since.Add(StatusStaleAfter))
	}
	sale.Status.LastReportTime = &metav1.Time{Time: now.Add(-time.Second)}
	if at, _ := staleAt(sale); !at.Equal(now.Add(-time.Second + StatusStaleAfter)) {
		t.Errorf("after a report: staleAt %v", at)
	}
	for _, p := range []salesv1alpha1.Phase{"", salesv1alpha1.PhaseProvisioning} {
		sale.Status.Phase = p
		if st := computeStatus(sale, observed{}, nil, now); st.Phase != salesv1alpha1.PhaseProvisioning {
			t.Errorf("from %q, nothing ready: phase %s, want Provisioning", p, st.Phase)
		}
		if _, ok := staleAt(sale); ok {
			t.Errorf("from %q: a stale clock before the sale is provisioned", p)
		}
	}
}
