package specs

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// The pins tell an edit of the sale's datastore fields (new inputs) from
// the operator's own change (same inputs, new template); fields that are
// not in the pod template change neither.
func TestDatastorePins_InputsOnlyFromTheSalesDatastoreFields(t *testing.T) {
	pins := func(s *salesv1alpha1.FlashSale) [2]metav1.ObjectMeta {
		return [2]metav1.ObjectMeta{RedisDeployment(s, opts).ObjectMeta, PostgresStatefulSet(s, opts).ObjectMeta}
	}
	base := pins(sale())
	for i, m := range base {
		if m.Annotations[TemplateHashAnnotation] == "" || m.Annotations[TemplateInputsAnnotation] == "" {
			t.Fatalf("workload %d: no pins %v", i, m.Annotations)
		}
	}
	same := func(a, b metav1.ObjectMeta, key string) bool { return a.Annotations[key] == b.Annotations[key] }
	for _, c := range []struct {
		name      string
		mutate    func(*salesv1alpha1.FlashSale)
		redis, pg bool // inputs (and template) change
	}{
		{"tickets, window and pause", func(s *salesv1alpha1.FlashSale) { s.Spec.Tickets, s.Spec.Paused = 500, true }, false, false},
		{"storage size", func(s *salesv1alpha1.FlashSale) {
			q := resource.MustParse("5Gi")
			s.Spec.Postgres.Storage = &salesv1alpha1.StorageSpec{Size: &q}
		}, false, false},
		{"redis tls", func(s *salesv1alpha1.FlashSale) { s.Spec.Redis.TLS = true }, true, false},
		{"postgres image", func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.Image = "postgres:15.10" }, false, true},
	} {
		got := pins(sale(c.mutate))
		for i, changed := range []bool{c.redis, c.pg} {
			for _, key := range []string{TemplateInputsAnnotation, TemplateHashAnnotation} {
				if same(base[i], got[i], key) == changed {
					t.Errorf("%s: workload %d, %s changed %v, want %v", c.name, i, key, !same(base[i], got[i], key), changed)
				}
			}
		}
	}
}
