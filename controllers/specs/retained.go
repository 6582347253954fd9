package specs

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// RetainedLabel marks the objects that share the database volume's
// lifetime (its credentials, its CA): with reclaimPolicy Retain they have
// no owner and outlive the FlashSale, and this label (with the sale's
// instance label) is how to find them afterwards.
const RetainedLabel = "fluxorder.io/retained-with-data"

// SaleUIDAnnotation on an object retained with the data names the sale that
// last used it, so a FlashSale re-created with the same name can tell it
// resumes an earlier sale's data.
const SaleUIDAnnotation = "fluxorder.io/sale-uid"

// Retains says whether the sale's data outlives it (postgres.reclaimPolicy
// Retain, the default).
func Retains(s *salesv1alpha1.FlashSale) bool {
	return s.Spec.Postgres.ReclaimPolicy != salesv1alpha1.ReclaimDelete
}

// DataObjectMeta names and labels an object that lives as long as the
// database's volume. With Retain it has no owner reference, so garbage
// collection leaves it when the sale is deleted and a FlashSale re-created
// with the same name finds it (a new password would lock it out of the
// retained data); with Delete the sale owns it like everything else.
func DataObjectMeta(s *salesv1alpha1.FlashSale, name, component string) metav1.ObjectMeta {
	m := objectMeta(s, name, component)
	m.Labels[RetainedLabel] = "true"
	m.Annotations = map[string]string{SaleUIDAnnotation: string(s.UID)}
	if Retains(s) {
		m.OwnerReferences = nil
	}
	return m
}
