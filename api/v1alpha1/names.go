package v1alpha1

// Names the operator and the purchase pods both use. They are spelled here
// once; the group and version are GroupVersion's.

const (
	// FlashSaleKind is the FlashSale's kind.
	FlashSaleKind = "FlashSale"
	// FlashSaleResource is the FlashSale's resource (its plural), as in API
	// paths and RBAC rules; its status subresource is FlashSaleResource+"/status".
	FlashSaleResource = "flashsales"
)

// ReporterLeaseName is the Lease a sale's purchase pods elect their status
// reporter with. The operator creates it, and the pods' Role allows exactly
// this one.
func ReporterLeaseName(sale string) string { return sale + "-purchase-reporter" }
