package controllers

import (
	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// pinImages records in the sale's spec the images its workloads run,
// resolved once from the operator's defaults (the manager's --*-image
// flags) when the sale is first reconciled; it reports whether it changed
// anything. From then on the spec, not the operator's flags, decides: an
// operator upgrade with new defaults changes no live sale, and upgrading a
// sale is an explicit edit of its spec. The spec (rather than the status or
// an annotation) holds them because it is what a person reads and edits,
// what a backup restores, and what the CRD's CEL rules can guard (a
// PostgreSQL major-version change is refused there).
func pinImages(s *salesv1alpha1.FlashSale, o specs.Options) bool {
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

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}
