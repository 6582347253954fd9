package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// Seat holds (issue 11): spec.holdTTL's bounds, its live reading by the
// pods, status.held from the pods' report, and the HELD printer column.
func TestHolds_HoldTTLBoundsLiveSettingsStatusHeldAndColumn(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	withTTL := func(name string, d time.Duration) *salesv1alpha1.FlashSale {
		return &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: salesv1alpha1.FlashSaleSpec{Tickets: 100, HoldTTL: &metav1.Duration{Duration: d}}}
	}
	for name, d := range map[string]time.Duration{"short": 5 * time.Second, "long": 2 * time.Hour, "negative": -time.Minute} {
		err := k8s.Create(ctx, withTTL("hold-"+name, d))
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "holdTTL must be 0s (holds off) or between 10s and 1h") {
			t.Fatalf("holdTTL %v: want the CEL refusal, got %v", d, err)
		}
	}
	for name, d := range map[string]time.Duration{"off": 0, "min": 10 * time.Second, "max": time.Hour} {
		if err := k8s.Create(ctx, withTTL("hold-"+name, d)); err != nil {
			t.Fatalf("holdTTL %v must be accepted: %v", d, err)
		}
	}

	sale := withTTL("holds", 2*time.Minute)
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	r, err := statusreport.New(cfg, ns, "holds", "pod-a", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := r.Get(ctx); err != nil || st.HoldTTL != 2*time.Minute {
		t.Fatalf("the pods must read holdTTL 2m, got %v %v", st.HoldTTL, err)
	}
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.HoldTTL = nil })
	if st, err := r.Get(ctx); err != nil || st.HoldTTL != 0 {
		t.Fatalf("holdTTL removed: the pods must read 0 (holds off), got %v %v", st.HoldTTL, err)
	}

	for name, obj := range map[string]client.Object{"holds-redis": &appsv1.Deployment{}, "holds-postgres": &appsv1.StatefulSet{}, "holds-purchase": &appsv1.Deployment{}} {
		markReady(t, ns, name, obj)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseOnSale, 10*time.Second)
	// The phase must not change below. To know that the controller has
	// read the report of held seats before saying so, the pods first report
	// 90 seeded seats of 100 (a growth: InventorySeeded Growing); the report
	// of held seats then turns InventorySeeded back to Seeded, in the same
	// status write as the phase it computed from that report.
	seeded := func(reason string) func() error {
		return func() error {
			c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionInventorySeeded)
			if c == nil || c.Reason != reason {
				return fmt.Errorf("InventorySeeded is %+v", c)
			}
			return nil
		}
	}
	counts := statusreport.Counts{Tickets: 90, Sold: 50}
	r.Counts = func(context.Context) (statusreport.Counts, error) { return counts, nil }
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "InventorySeeded Growing after a report of 90 seats of 100", seeded("Growing"))
	counts = statusreport.Counts{Tickets: 100, Sold: 93, Held: 7}
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	st := saleNow(t, sale).Status
	if ptr.Deref(st.Held, -1) != 7 || ptr.Deref(st.Available, -1) != 0 || ptr.Deref(st.Sold, -1) != 93 {
		t.Fatalf("want sold 93, held 7, available 0, got %+v", st)
	}
	if got := printerCell(t, ns, "holds", "Held"); got != float64(7) {
		t.Fatalf("kubectl get's HELD column shows %v, want 7", got)
	}
	// Held seats are seeded seats (not a growth in progress), and every
	// seat sold or held is not sold out (holds end).
	testservers.Eventually(t, 10*time.Second, poll, "held seats counted as seeded: InventorySeeded Seeded", seeded("Seeded"))
	if now := saleNow(t, sale); now.Status.Phase != salesv1alpha1.PhaseOnSale {
		t.Fatalf("7 seats held, none free: the phase must stay OnSale, got %s", now.Status.Phase)
	}
	counts = statusreport.Counts{Tickets: 100, Sold: 100}
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	waitPhase(t, sale, salesv1alpha1.PhaseSoldOut, 10*time.Second)
}

// printerCell is the cell of column name in the server-side table kubectl
// get prints for one FlashSale.
func printerCell(t *testing.T, ns, name, column string) any {
	t.Helper()
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := kc.CoreV1().RESTClient().Get().AbsPath("/apis/sales.fluxorder.io/v1alpha1/namespaces", ns, "flashsales", name).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil || len(table.Rows) != 1 {
		t.Fatalf("table: %v %s", err, raw)
	}
	for i, c := range table.ColumnDefinitions {
		if c.Name == column {
			return table.Rows[0].Cells[i]
		}
	}
	t.Fatalf("no %s column in %+v", column, table.ColumnDefinitions)
	return nil
}
