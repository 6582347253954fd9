// Package specs builds the objects a FlashSale owns. Each builder is a pure
// function: the sale (and the operator's defaults) in, the desired object
// out, nil when the object should not exist. No client calls here; the
// controller decides and applies.
package specs

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// Components, the app.kubernetes.io/component label of each owned object.
const (
	ComponentPurchase = "purchase"
	ComponentRedis    = "redis"
	ComponentPostgres = "postgres"
)

// Ports.
const (
	PurchasePort = 8080
	MetricsPort  = 9090
	RedisPort    = 6379
	PostgresPort = 5432
)

// Options are the operator-wide defaults (manager flags).
type Options struct {
	PurchaseImage string
	RedisImage    string
	PostgresImage string
	// MetricsNamespaces selects the namespaces (Prometheus') allowed to
	// scrape the purchase pods' metrics port; nil allows none.
	MetricsNamespaces *metav1.LabelSelector
}

// Names of a sale's owned objects. The CRD caps sale names at 40
// characters so that every derived name (StatefulSet pods, their PVCs,
// revision hashes) stays within Kubernetes' limits.
func PurchaseName(s *salesv1alpha1.FlashSale) string { return s.Name + "-purchase" }
func RedisName(s *salesv1alpha1.FlashSale) string    { return s.Name + "-redis" }
func PostgresName(s *salesv1alpha1.FlashSale) string { return s.Name + "-postgres" }
func IngressName(s *salesv1alpha1.FlashSale) string  { return s.Name }
func LeaseName(s *salesv1alpha1.FlashSale) string    { return salesv1alpha1.ReporterLeaseName(s.Name) }

// SelectorLabels select a component's pods; they never change.
func SelectorLabels(s *salesv1alpha1.FlashSale, component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "flux-order",
		"app.kubernetes.io/instance":  s.Name,
		"app.kubernetes.io/component": component,
	}
}

// ManagedByLabel = ManagedBy marks every object the operator owns; its
// cache holds nothing else.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "flux-order"
)

// Labels are SelectorLabels plus managed-by, on every owned object.
func Labels(s *salesv1alpha1.FlashSale, component string) map[string]string {
	l := SelectorLabels(s, component)
	l[ManagedByLabel] = ManagedBy
	return l
}

// objectMeta names an owned object, labels it and makes the sale its
// controller, so deleting the sale garbage-collects it.
func objectMeta(s *salesv1alpha1.FlashSale, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:            name,
		Namespace:       s.Namespace,
		Labels:          Labels(s, component),
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(s, salesv1alpha1.GroupVersion.WithKind(salesv1alpha1.FlashSaleKind))},
	}
}

// restricted is the container security context of the restricted Pod
// Security Standard.
func restricted(readOnlyRoot bool) *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(readOnlyRoot),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}
