package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

// Issue 20: the manager exports each sale's counts, phase and report age,
// labelled namespace and flashsale (the label the PodMonitor gives the
// purchase pods' series); a deleted sale's series go with it.
func TestSaleMetrics_FollowTheStatus_GoneWithTheSale(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "metered", Namespace: ns}, Spec: salesv1alpha1.FlashSaleSpec{Tickets: 50}}
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	r, err := statusreport.New(cfg, ns, "metered", "pod-a", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 50, Sold: 12, Held: 3}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.ReportOnce(ctx); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&SaleMetrics{Reader: k8s})
	mine := func() (string, error) {
		families, err := reg.Gather()
		if err != nil {
			return "", err
		}
		var out []string
		for _, f := range families {
			for _, m := range f.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["namespace"] == ns {
					if labels["flashsale"] != "metered" {
						return "", fmt.Errorf("%s: labels %v, want flashsale=metered", f.GetName(), labels)
					}
					out = append(out, fmt.Sprintf("%s{%s}=%v", f.GetName(), labels["phase"], m.GetGauge().GetValue()))
				}
			}
		}
		return strings.Join(out, " "), nil
	}
	for _, want := range []string{"flux_order_flashsale_tickets{}=50", "flux_order_flashsale_sold{}=12", "flux_order_flashsale_held{}=3",
		"flux_order_flashsale_available{}=35", "flux_order_flashsale_phase{Provisioning}=1"} {
		testservers.Eventually(t, 10*time.Second, poll, want, func() error {
			got, err := mine()
			if err != nil || !strings.Contains(got, want) {
				return fmt.Errorf("series %s (%v)", got, err)
			}
			return nil
		})
	}
	if n := testutil.CollectAndCount(&SaleMetrics{Reader: k8s}, "flux_order_flashsale_status_report_age_seconds"); n == 0 {
		t.Error("no report age series")
	}
	if err := k8s.Delete(ctx, sale); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "the deleted sale's series gone", func() error {
		if got, err := mine(); err != nil || got != "" {
			return fmt.Errorf("series %q (%v)", got, err)
		}
		return nil
	})
}
