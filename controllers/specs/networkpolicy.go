package specs

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// NetworkPoliciesEnabled says whether the sale wants its NetworkPolicies
// (spec.networkPolicy.enabled, default true).
func NetworkPoliciesEnabled(s *salesv1alpha1.FlashSale) bool {
	e := s.Spec.NetworkPolicy.Enabled
	return e == nil || *e
}

// RedisNetworkPolicy lets only the sale's own purchase pods reach its
// Redis: a pod elsewhere could otherwise write sold markers (refusing
// unsold seats) or delete locks. The operator never talks to Redis.
func RedisNetworkPolicy(s *salesv1alpha1.FlashSale) *networkingv1.NetworkPolicy {
	if s.Spec.Redis.External != nil || !NetworkPoliciesEnabled(s) {
		return nil
	}
	return datastorePolicy(s, RedisName(s), ComponentRedis, RedisPort)
}

// PostgresNetworkPolicy lets only the sale's own purchase pods reach its
// database. The operator never talks to it.
func PostgresNetworkPolicy(s *salesv1alpha1.FlashSale) *networkingv1.NetworkPolicy {
	if s.Spec.Postgres.External != nil || !NetworkPoliciesEnabled(s) {
		return nil
	}
	return datastorePolicy(s, PostgresName(s), ComponentPostgres, PostgresPort)
}

func datastorePolicy(s *salesv1alpha1.FlashSale, name, component string, port int32) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta:   typeMeta("networking.k8s.io/v1", "NetworkPolicy"),
		ObjectMeta: objectMeta(s, name, component),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *selector(SelectorLabels(s, component)),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: selector(SelectorLabels(s, ComponentPurchase))}},
				Ports: []networkingv1.NetworkPolicyPort{tcpPort(port)},
			}},
		},
	}
}

// PurchaseNetworkPolicy opens the purchase API's port to everyone (buyers
// come through the Ingress controller, wherever it runs) and the metrics
// port only to the namespaces the operator was told hold monitoring.
func PurchaseNetworkPolicy(s *salesv1alpha1.FlashSale, o Options) *networkingv1.NetworkPolicy {
	if !NetworkPoliciesEnabled(s) {
		return nil
	}
	rules := []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{tcpPort(PurchasePort)}}}
	if o.MetricsNamespaces != nil {
		rules = append(rules, networkingv1.NetworkPolicyIngressRule{
			From:  []networkingv1.NetworkPolicyPeer{{NamespaceSelector: o.MetricsNamespaces.DeepCopy()}},
			Ports: []networkingv1.NetworkPolicyPort{tcpPort(MetricsPort)},
		})
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   typeMeta("networking.k8s.io/v1", "NetworkPolicy"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *selector(SelectorLabels(s, ComponentPurchase)),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

func tcpPort(port int32) networkingv1.NetworkPolicyPort {
	return networkingv1.NetworkPolicyPort{Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(intstr.FromInt32(port))}
}
