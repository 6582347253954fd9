// Package v1alpha1 is the sales.fluxorder.io/v1alpha1 API: the FlashSale.
// +kubebuilder:object:generate=true
// +groupName=sales.fluxorder.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "sales.fluxorder.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types of this API.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this API to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
