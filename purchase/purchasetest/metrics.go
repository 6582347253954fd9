package purchasetest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flux-order/flux-order/purchase"
)

// Counter is the value of the pod's counter (or gauge) name whose labels
// include labelPairs (name, value, name, value…); 0 when it has no such
// series.
func Counter(t testing.TB, svc *purchase.Service, name string, labelPairs ...string) float64 {
	t.Helper()
	return GatheredCounter(t, svc.Gatherer(), name, labelPairs...)
}

// GatheredCounter is Counter of any registry.
func GatheredCounter(t testing.TB, g prometheus.Gatherer, name string, labelPairs ...string) float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if have[labelPairs[i]] != labelPairs[i+1] {
					continue series
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
