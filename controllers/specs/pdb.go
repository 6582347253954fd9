package specs

import (
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// PurchasePDB lets voluntary disruptions (node drains) take at most one
// purchase pod at a time; nil when there is at most one pod, where a PDB
// would block drains forever.
func PurchasePDB(s *salesv1alpha1.FlashSale) *policyv1.PodDisruptionBudget {
	pods := int32(0)
	if as := s.Spec.PurchaseAPI.Autoscaling; as != nil {
		pods = as.MinReplicas
	} else if r := PurchaseReplicas(s); r != nil {
		pods = *r
	}
	if pods <= 1 {
		return nil
	}
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   typeMeta("policy/v1", "PodDisruptionBudget"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       selector(SelectorLabels(s, ComponentPurchase)),
		},
	}
}
