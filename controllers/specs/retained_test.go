package specs

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

func TestDataObjectMeta_FollowsReclaimPolicy(t *testing.T) {
	del := func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.ReclaimPolicy = salesv1alpha1.ReclaimDelete }
	cases := []struct {
		name      string
		sale      *salesv1alpha1.FlashSale
		owned     bool
		retention appsv1.PersistentVolumeClaimRetentionPolicyType
	}{
		{"default (Retain)", sale(), false, appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		{"Retain", sale(func(s *salesv1alpha1.FlashSale) { s.Spec.Postgres.ReclaimPolicy = salesv1alpha1.ReclaimRetain }), false, appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
		{"Delete", sale(del), true, appsv1.DeletePersistentVolumeClaimRetentionPolicyType},
	}
	for _, c := range cases {
		secret := PostgresSecret(c.sale, "pw")
		if owned := len(secret.OwnerReferences) == 1 && secret.OwnerReferences[0].UID == "u-1"; owned != c.owned {
			t.Errorf("%s: Secret owned by the sale = %v, want %v", c.name, owned, c.owned)
		}
		if secret.Labels[RetainedLabel] != "true" || secret.Labels["app.kubernetes.io/instance"] != "gig" {
			t.Errorf("%s: labels %v", c.name, secret.Labels)
		}
		if got := PostgresStatefulSet(c.sale, opts).Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted; got != c.retention {
			t.Errorf("%s: volume retention %s, want %s", c.name, got, c.retention)
		}
	}
}
