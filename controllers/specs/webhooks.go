package specs

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// WebhooksDir is where the purchase pods find the resolved webhooks
// (Secret <s>-webhooks, key webhooks.json).
const (
	WebhooksDir  = "/etc/flux-order/webhooks"
	WebhooksFile = WebhooksDir + "/" + salesv1alpha1.WebhooksFileKey
)

// WebhooksSecretName is the operator's Secret that carries spec.delivery,
// resolved, to the purchase pods.
func WebhooksSecretName(s *salesv1alpha1.FlashSale) string { return s.Name + "-webhooks" }

// WebhooksSecret is spec.delivery with every Secret it names read in:
// the one file the purchase pods follow for delivery. It exists for every
// sale (an empty list without webhooks) and is always mounted, so adding
// the first webhook, like any later change, rewrites a file and never the
// pod template: the pods are not restarted. It is derived, so it goes
// with the sale.
func WebhooksSecret(s *salesv1alpha1.FlashSale, resolved []salesv1alpha1.ResolvedWebhook) *corev1.Secret {
	f := salesv1alpha1.WebhooksFile{Webhooks: resolved}
	if f.Webhooks == nil {
		f.Webhooks = []salesv1alpha1.ResolvedWebhook{}
	}
	if s.Spec.Delivery != nil {
		f.RedeliverDead = s.Spec.Delivery.RedeliverDead
	}
	b, _ := json.Marshal(f) // plain structs: cannot fail
	return secret(s, WebhooksSecretName(s), ComponentPurchase, corev1.SecretTypeOpaque, map[string]string{
		salesv1alpha1.WebhooksFileKey: string(b),
	})
}

// webhooksVolume mounts <s>-webhooks whole (no subPath: the kubelet
// refreshes it in place). Optional, so a pod starts before the operator
// wrote it; the pod then sees no webhooks until it appears.
func webhooksVolume(s *salesv1alpha1.FlashSale) (corev1.Volume, corev1.VolumeMount) {
	v := secretVolume("webhooks", WebhooksSecretName(s), 0o444, salesv1alpha1.WebhooksFileKey)
	v.Secret.Optional = ptr.To(true)
	return v, corev1.VolumeMount{Name: "webhooks", MountPath: WebhooksDir, ReadOnly: true}
}
