package controllers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// WebhookSecretsRefresh is how often a sale with webhooks is reconciled to
// carry edits of the Secrets its webhooks name (the owner's Secrets are
// neither cached nor watched: the operator reads just the keys it is
// pointed at, when it reconciles).
const WebhookSecretsRefresh = time.Minute

// ensureWebhooks generates the signing secret of each webhook that names
// none (once, into <sale>-sale, kept with the orders), resolves every
// webhook's Secrets and writes them to <sale>-webhooks, which the purchase
// pods follow as a mounted file. It answers the WebhooksReady check: the
// webhooks that could not be resolved, by name, with why.
func (r *FlashSaleReconciler) ensureWebhooks(ctx context.Context, sale *salesv1alpha1.FlashSale) (check, error) {
	var hooks []salesv1alpha1.WebhookSpec
	if sale.Spec.Delivery != nil {
		hooks = sale.Spec.Delivery.Webhooks
	}
	generated, err := r.ensureSigningSecrets(ctx, sale, hooks)
	if err != nil {
		return check{false, "SecretFailed", err.Error()}, err
	}
	resolved := make([]salesv1alpha1.ResolvedWebhook, 0, len(hooks))
	var problems []string
	for _, h := range hooks {
		rw := r.resolveWebhook(ctx, sale, h, generated)
		if rw.Error != "" {
			problems = append(problems, h.Name+": "+rw.Error)
		}
		resolved = append(resolved, rw)
	}
	desired := specs.WebhooksSecret(sale, resolved)
	existing, err := r.getSecret(ctx, sale, desired.Name)
	if err != nil {
		return check{false, "SecretFailed", err.Error()}, err
	}
	if existing == nil {
		err = r.createSecret(ctx, sale, desired)
	} else {
		err = r.updateDerived(ctx, existing, desired)
	}
	if err != nil {
		return check{false, "SecretFailed", err.Error()}, err
	}
	switch {
	case len(hooks) == 0:
		return check{true, "NoWebhooks", "the sale has no webhooks"}, nil
	case len(problems) > 0:
		return check{false, "WebhookUnresolved", "events wait, pending, for: " + strings.Join(problems, "; ")}, nil
	}
	return check{true, "Resolved", fmt.Sprintf("%d webhooks handed to the purchase pods", len(hooks))}, nil
}

// ensureSigningSecrets adds a generated whsec_ secret to <sale>-sale for
// each webhook without signingSecretRef that has none yet, and answers
// every generated one by key. A generated secret is never changed; it is
// dropped with the sale's Secret only.
func (r *FlashSaleReconciler) ensureSigningSecrets(ctx context.Context, sale *salesv1alpha1.FlashSale, hooks []salesv1alpha1.WebhookSpec) (map[string][]byte, error) {
	sec, err := r.getSecret(ctx, sale, specs.SaleSecretName(sale))
	if err != nil || sec == nil {
		return nil, err // ensureSecrets made it (or reported why not)
	}
	var missing []string
	for _, h := range hooks {
		k := salesv1alpha1.WebhookSigningSecretKey(h.Name)
		if h.SigningSecretRef == nil && len(sec.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return sec.Data, nil
	}
	updated := sec.DeepCopy()
	for _, k := range missing {
		v, err := newSigningSecret()
		if err != nil {
			return nil, err
		}
		updated.Data[k] = []byte(v)
	}
	if err := r.Update(ctx, updated); err != nil {
		return nil, err
	}
	r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Created", "Reconcile",
		"generated webhook signing secrets into Secret %s (keys %s)", sec.Name, strings.Join(missing, ", "))
	return updated.Data, nil
}

// newSigningSecret is a Standard Webhooks secret: whsec_ and the base64
// of 32 random bytes.
func newSigningSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

// resolveWebhook reads the webhook's Secrets through the API reader (the
// cache holds only the operator's own Secrets).
func (r *FlashSaleReconciler) resolveWebhook(ctx context.Context, sale *salesv1alpha1.FlashSale, h salesv1alpha1.WebhookSpec, generated map[string][]byte) salesv1alpha1.ResolvedWebhook {
	rw := salesv1alpha1.ResolvedWebhook{Name: h.Name, Events: h.Events, InsecureHTTP: h.InsecureHTTP}
	url, err := r.secretValue(ctx, sale, h.URLSecretRef)
	if err != nil {
		rw.Error = "urlSecretRef: " + err.Error()
		return rw
	}
	rw.URL = strings.TrimSpace(url)
	if why := salesv1alpha1.CheckWebhookURL(rw.URL, h.InsecureHTTP); why != "" {
		rw.URL, rw.Error = "", why
		return rw
	}
	signing := string(generated[salesv1alpha1.WebhookSigningSecretKey(h.Name)])
	if h.SigningSecretRef != nil {
		if signing, err = r.secretValue(ctx, sale, *h.SigningSecretRef); err != nil {
			rw.Error = "signingSecretRef: " + err.Error()
			return rw
		}
	}
	rw.SigningSecrets = strings.Fields(signing)
	if len(rw.SigningSecrets) == 0 {
		rw.Error = "no signing secret yet"
		return rw
	}
	for _, s := range rw.SigningSecrets {
		if !strings.HasPrefix(s, "whsec_") {
			rw.SigningSecrets, rw.Error = nil, "a signing secret must read whsec_<base64>"
			return rw
		}
		if _, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_")); err != nil {
			rw.SigningSecrets, rw.Error = nil, "a signing secret's part after whsec_ is not base64"
			return rw
		}
	}
	if h.CASecretRef != nil {
		if rw.CA, err = r.secretValue(ctx, sale, *h.CASecretRef); err != nil {
			rw.Error = "caSecretRef: " + err.Error()
		}
	}
	return rw
}

// secretValue is one key of a Secret in the sale's namespace.
func (r *FlashSaleReconciler) secretValue(ctx context.Context, sale *salesv1alpha1.FlashSale, ref corev1.SecretKeySelector) (string, error) {
	s := &corev1.Secret{}
	err := r.reader().Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: ref.Name}, s)
	if apierrors.IsNotFound(err) {
		return "", fmt.Errorf("Secret %s does not exist", ref.Name)
	}
	if err != nil {
		return "", fmt.Errorf("read Secret %s: %w", ref.Name, err)
	}
	v, ok := s.Data[ref.Key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("Secret %s has no key %q", ref.Name, ref.Key)
	}
	return string(v), nil
}

// WebhookFailingAfter is how long an endpoint fails before the operator
// raises a Warning event on the sale (the purchase pods may not create
// Events; they report status.delivery, which the operator reads).
const WebhookFailingAfter = time.Minute

// warnFailingWebhooks raises one Warning WebhookFailing per failing run
// (status.delivery.webhooks[].failingSince) that has lasted over
// WebhookFailingAfter, and answers when to look again for a run that has
// not yet (0: none).
func (r *FlashSaleReconciler) warnFailingWebhooks(sale *salesv1alpha1.FlashSale, now time.Time) time.Duration {
	if sale.Status.Delivery == nil {
		return 0
	}
	var next time.Duration
	for _, w := range sale.Status.Delivery.Webhooks {
		key := sale.Namespace + "/" + sale.Name + "/" + w.Name
		if w.FailingSince == nil {
			r.warned.Delete(key)
			continue
		}
		due := w.FailingSince.Add(WebhookFailingAfter)
		if now.Before(due) {
			if wait := due.Sub(now); next == 0 || wait < next {
				next = wait
			}
			continue
		}
		if prev, ok := r.warned.Load(key); ok && prev.(time.Time).Equal(w.FailingSince.Time) {
			continue
		}
		r.warned.Store(key, w.FailingSince.Time)
		r.Recorder.Eventf(sale, nil, corev1.EventTypeWarning, "WebhookFailing", "Deliver",
			"webhook %s has failed since %s (%d pending, last: %s): its events are retried (docs/runbooks.md, FluxOrderWebhookFailing)",
			w.Name, w.FailingSince.UTC().Format(time.RFC3339), w.Pending, w.LastError)
	}
	return next
}

// failingRuns is the sale's failing runs as one comparable string: a
// report that starts or ends one matters to the reconciler.
func failingRuns(sale *salesv1alpha1.FlashSale) string {
	if sale.Status.Delivery == nil {
		return ""
	}
	var b strings.Builder
	for _, w := range sale.Status.Delivery.Webhooks {
		if w.FailingSince != nil {
			b.WriteString(w.Name + "@" + w.FailingSince.UTC().Format(time.RFC3339) + ";")
		}
	}
	return b.String()
}
