package specs

import (
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// PurchaseIngress publishes the purchase API on the sale's host; nil
// without spec.ingress.
func PurchaseIngress(s *salesv1alpha1.FlashSale) *networkingv1.Ingress {
	in := s.Spec.Ingress
	if in == nil {
		return nil
	}
	ing := &networkingv1.Ingress{
		TypeMeta:   typeMeta("networking.k8s.io/v1", "Ingress"),
		ObjectMeta: objectMeta(s, IngressName(s), ComponentPurchase),
		Spec: networkingv1.IngressSpec{
			IngressClassName: in.ClassName,
			Rules: []networkingv1.IngressRule{{
				Host: in.Host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: ptr.To(networkingv1.PathTypePrefix),
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: PurchaseName(s), Port: networkingv1.ServiceBackendPort{Name: "http"},
						}},
					}},
				}},
			}},
		},
	}
	if in.TLSSecretName != "" {
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{in.Host}, SecretName: in.TLSSecretName}}
	}
	return ing
}

// URL is where buyers reach the sale.
func URL(s *salesv1alpha1.FlashSale) string {
	if in := s.Spec.Ingress; in != nil {
		if in.TLSSecretName != "" {
			return "https://" + in.Host
		}
		return "http://" + in.Host
	}
	return "http://" + PurchaseName(s) + "." + s.Namespace + ".svc"
}
