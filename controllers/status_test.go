package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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
