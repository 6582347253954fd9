package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func TestWaitingRoom_BadSpecs_RefusedByCEL(t *testing.T) {
	ns := newNamespace(t)
	now := time.Now().Truncate(time.Second)
	sale := func(name string, wr salesv1alpha1.WaitingRoomSpec) *salesv1alpha1.FlashSale {
		return &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, StartsAt: &metav1.Time{Time: now.Add(time.Hour)}, WaitingRoom: &wr}}
	}
	cases := []struct {
		name string
		wr   salesv1alpha1.WaitingRoomSpec
		want string
	}{
		{"no admission rate", salesv1alpha1.WaitingRoomSpec{}, "spec.waitingRoom.admitPerSecond"},
		{"negative active cap", salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, MaxActiveBuyers: -1}, "spec.waitingRoom.maxActiveBuyers"},
		{"unknown order", salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, Order: "LIFO"}, "spec.waitingRoom.order"},
		{"queue opening after the sale", salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, JoinFrom: &metav1.Time{Time: now.Add(2 * time.Hour)}},
			"waitingRoom.joinFrom must not be after startsAt"},
		{"pass too short", salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, PassTTL: &metav1.Duration{Duration: time.Second}},
			"waitingRoom.passTTL must be between 30s and 24h"},
		{"pass too long", salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 5, PassTTL: &metav1.Duration{Duration: 48 * time.Hour}},
			"waitingRoom.passTTL must be between 30s and 24h"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8s.Create(context.Background(), sale("bad-"+string(rune('a'+i)), c.wr))
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want Invalid mentioning %q, got %v", c.want, err)
			}
		})
	}
}

func TestWaitingRoom_DefaultsAndLiveSettings_ReachThePods(t *testing.T) {
	ns := newNamespace(t)
	startsAt := time.Now().Add(time.Hour).Truncate(time.Second)
	s := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "queued", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, StartsAt: &metav1.Time{Time: startsAt},
			WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 50}}}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	got := saleNow(t, s).Spec.WaitingRoom
	if got.Order != salesv1alpha1.QueueFIFO || got.PassTTL == nil || got.PassTTL.Duration != 10*time.Minute {
		t.Fatalf("defaults: want order FIFO and passTTL 10m, got %+v", got)
	}
	r, err := statusreport.New(cfg, ns, "queued", "pod-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	settings := make(chan statusreport.Settings, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Follow(ctx, func(s statusreport.Settings) { settings <- s })
	first := (<-settings).WaitingRoom
	if want := (salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 50, Order: salesv1alpha1.QueueFIFO,
		PassTTL: &metav1.Duration{Duration: 10 * time.Minute}}); first == nil || !equality.Semantic.DeepEqual(*first, want) {
		t.Fatalf("the pods' first settings: %+v", first)
	}
	joinFrom := startsAt.Add(-30 * time.Minute)
	want := salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 7, MaxActiveBuyers: 100, Order: salesv1alpha1.QueueRandom,
		JoinFrom: &metav1.Time{Time: joinFrom}, PassTTL: &metav1.Duration{Duration: 2 * time.Minute}}
	patchSpec(t, s, func(s *salesv1alpha1.FlashSale) { s.Spec.WaitingRoom = want.DeepCopy() })
	select {
	case st := <-settings:
		// Semantic equality compares joinFrom as an instant.
		if st.WaitingRoom == nil || !equality.Semantic.DeepEqual(*st.WaitingRoom, want) {
			t.Fatalf("want %+v, got %+v", want, st.WaitingRoom)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting room change did not reach the pods' watch")
	}
}

func TestWaitingRoom_StatusReportedByThePods_WaitingColumn_KeptByReconciles(t *testing.T) {
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "lined-up", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 100, WaitingRoom: &salesv1alpha1.WaitingRoomSpec{AdmitPerSecond: 10}}}
	ctx := context.Background()
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	counts := statusreport.Counts{Tickets: 100, Sold: 40, Queue: &statusreport.QueueCounts{Waiting: 1234, Admitted: 80, ServingPosition: 81}}
	r, err := statusreport.New(asPurchasePod(ns, "lined-up"), ns, "lined-up", "pod-1",
		func(context.Context) (statusreport.Counts, error) { return counts, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the pods' report (their Role exists)", func() error { return r.ReportOnce(ctx) })
	want := salesv1alpha1.WaitingRoomStatus{Waiting: 1234, Admitted: 80, ServingPosition: 81}
	if got := saleNow(t, sale).Status.WaitingRoom; got == nil || *got != want {
		t.Fatalf("status.waitingRoom: want %+v, got %+v", want, got)
	}
	if got := printerCell(t, ns, "lined-up", "Waiting"); got != float64(1234) {
		t.Fatalf("kubectl get's WAITING column shows %v, want 1234", got)
	}
	// A reconcile (spec change) keeps the pods' field.
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.WaitingRoom.AdmitPerSecond = 20 })
	testservers.Eventually(t, 10*time.Second, poll, "reconciled", func() error {
		if s := saleNow(t, sale); s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("observed generation %d of %d", s.Status.ObservedGeneration, s.Generation)
		}
		return nil
	})
	if got := saleNow(t, sale).Status.WaitingRoom; got == nil || *got != want {
		t.Fatalf("a reconcile overwrote status.waitingRoom: %+v", got)
	}
	// The waiting room turned off: the pods stop reporting it, and it goes.
	counts.Queue = nil
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	if got := saleNow(t, sale).Status.WaitingRoom; got != nil {
		t.Fatalf("without a waiting room status.waitingRoom must go, got %+v", got)
	}
}
