package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// resolveImages records in the sale's spec the images its workloads run,
// resolved once from the operator's defaults (the manager's --*-image
// flags) when the sale is first reconciled; it reports whether it changed
// anything. From then on the spec, not the operator's flags, decides: an
// operator upgrade with new defaults changes no live sale, and upgrading a
// sale is an explicit edit of its spec. The spec (rather than the status or
// an annotation) holds them because it is what a person reads and edits,
// what a backup restores, and what the CRD's CEL rules can guard (a
// PostgreSQL major-version change is refused there).
func resolveImages(s *salesv1alpha1.FlashSale, o specs.Options) bool {
	changed := false
	pin := func(field *string, def string) {
		if *field == "" && def != "" {
			*field, changed = def, true
		}
	}
	pin(&s.Spec.PurchaseAPI.Image, o.PurchaseImage)
	if s.Spec.Redis.External == nil {
		pin(&s.Spec.Redis.Image, o.RedisImage)
	}
	if s.Spec.Postgres.External == nil {
		pin(&s.Spec.Postgres.Image, o.PostgresImage)
	}
	return changed
}

// pinImages records the sale's images in its spec on its first reconcile
// (see resolveImages); sale is updated in place.
func (r *FlashSaleReconciler) pinImages(ctx context.Context, sale *salesv1alpha1.FlashSale) error {
	pinned := sale.DeepCopy()
	if !resolveImages(pinned, r.Options) {
		return nil
	}
	if err := r.Patch(ctx, pinned, client.MergeFrom(sale), client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("record the images: %w", err)
	}
	r.Recorder.Eventf(pinned, nil, corev1.EventTypeNormal, "ImagesPinned", "Reconcile", "images pinned: purchase %s, redis %s, postgres %s",
		pinned.Spec.PurchaseAPI.Image, firstOf(pinned.Spec.Redis.Image, "external"), firstOf(pinned.Spec.Postgres.Image, "external"))
	*sale = *pinned
	return nil
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
