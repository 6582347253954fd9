package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// SaleMetrics exports every watched FlashSale's status as Prometheus
// series of the manager (issue 20): read from the cache at scrape time, so
// a deleted sale's series go with it and nothing is kept in between. Every
// series is labelled namespace and flashsale (the sale's name): the chart's
// PodMonitor gives the purchase pods' series the same two labels, so the two
// join (docs/observability.md).
type SaleMetrics struct {
	Reader client.Reader // the manager's cached client
	Now    func() time.Time
}

var (
	saleLabels = []string{"namespace", "flashsale"}
	saleGauges = []struct {
		desc  *prometheus.Desc
		value func(*salesv1alpha1.FlashSale) (float64, bool)
	}{
		{gaugeDesc("tickets", "Seats of the sale (spec.tickets)."), func(s *salesv1alpha1.FlashSale) (float64, bool) { return float64(s.Spec.Tickets), true }},
		{gaugeDesc("sold", "Seats sold, as the purchase pods last reported."), reported(func(st salesv1alpha1.FlashSaleStatus) *int64 { return st.Sold })},
		{gaugeDesc("held", "Seats held at checkout, as last reported."), reported(func(st salesv1alpha1.FlashSaleStatus) *int64 { return st.Held })},
		{gaugeDesc("available", "Seats neither sold nor held, as last reported."), reported(func(st salesv1alpha1.FlashSaleStatus) *int64 { return st.Available })},
		{gaugeDesc("waiting", "Buyers waiting in the waiting room, as last reported (0 without one)."), func(s *salesv1alpha1.FlashSale) (float64, bool) {
			if w := s.Status.WaitingRoom; w != nil {
				return float64(w.Waiting), true
			}
			return 0, true
		}},
		{gaugeDesc("admitted", "Buyers admitted from the waiting room, as last reported (0 without one)."), func(s *salesv1alpha1.FlashSale) (float64, bool) {
			if w := s.Status.WaitingRoom; w != nil {
				return float64(w.Admitted), true
			}
			return 0, true
		}},
		{gaugeDesc("purchase_ready_pods", "Ready purchase pods."), func(s *salesv1alpha1.FlashSale) (float64, bool) { return float64(s.Status.ReadyReplicas), true }},
	}
	salePhase = prometheus.NewDesc("flux_order_flashsale_phase", "The sale's phase: 1 for the phase it is in (label phase).",
		append(append([]string{}, saleLabels...), "phase"), nil)
	saleReportAge = prometheus.NewDesc("flux_order_flashsale_status_report_age_seconds",
		"Seconds since the purchase pods last reported the counts (absent before the first report).", saleLabels, nil)
)

func gaugeDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("flux_order_flashsale_"+name, help, saleLabels, nil)
}

// reported reads a count the pods report; absent before their first report.
func reported(field func(salesv1alpha1.FlashSaleStatus) *int64) func(*salesv1alpha1.FlashSale) (float64, bool) {
	return func(s *salesv1alpha1.FlashSale) (float64, bool) {
		v := field(s.Status)
		return float64(ptr.Deref(v, 0)), v != nil
	}
}

// Describe sends every series' description.
func (m *SaleMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range saleGauges {
		ch <- g.desc
	}
	ch <- salePhase
	ch <- saleReportAge
}

// Collect lists the sales from the cache and sends their series.
func (m *SaleMetrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sales salesv1alpha1.FlashSaleList
	if err := m.Reader.List(ctx, &sales); err != nil {
		return // the scrape shows no sale series rather than stale ones
	}
	now := time.Now()
	if m.Now != nil {
		now = m.Now()
	}
	for i := range sales.Items {
		s := &sales.Items[i]
		for _, g := range saleGauges {
			if v, ok := g.value(s); ok {
				ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, s.Namespace, s.Name)
			}
		}
		if s.Status.Phase != "" {
			ch <- prometheus.MustNewConstMetric(salePhase, prometheus.GaugeValue, 1, s.Namespace, s.Name, string(s.Status.Phase))
		}
		if r := s.Status.LastReportTime; r != nil {
			ch <- prometheus.MustNewConstMetric(saleReportAge, prometheus.GaugeValue, now.Sub(r.Time).Seconds(), s.Namespace, s.Name)
		}
	}
}
