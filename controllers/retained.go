package controllers

import (
	"context"
	"maps"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// keepWithData makes an existing object that shares the database volume's
// lifetime (built with specs.DataObjectMeta: the database credentials, its
// CA) follow the sale's reclaimPolicy: ownerless with Retain, so garbage
// collection leaves it with the volume; owned by the sale with Delete. It
// also adopts such an object left by an earlier sale of the same name. Only
// the owner references, labels and annotations change, never the data.
func (r *FlashSaleReconciler) keepWithData(ctx context.Context, existing client.Object, want metav1.ObjectMeta) error {
	merged := func(have, want map[string]string) map[string]string {
		m := maps.Clone(have)
		if m == nil {
			m = map[string]string{}
		}
		maps.Copy(m, want)
		return m
	}
	labels, annotations := merged(existing.GetLabels(), want.Labels), merged(existing.GetAnnotations(), want.Annotations)
	if equality.Semantic.DeepEqual(existing.GetOwnerReferences(), want.OwnerReferences) &&
		maps.Equal(labels, existing.GetLabels()) && maps.Equal(annotations, existing.GetAnnotations()) {
		return nil
	}
	before := existing.DeepCopyObject().(client.Object)
	existing.SetOwnerReferences(want.OwnerReferences)
	existing.SetLabels(labels)
	existing.SetAnnotations(annotations)
	return r.Patch(ctx, existing, client.MergeFrom(before), client.FieldOwner(FieldOwner))
}
