package v1alpha1

import (
	"net/url"
	"strings"
)

// WebhooksFileKey is the key of the operator's Secret <sale>-webhooks that
// the purchase pods mount (docs/architecture.md: Secrets reach the pods as
// files the kubelet refreshes) and read as WebhooksFile: the webhooks of
// spec.delivery with their Secrets resolved. The operator writes it, the
// pods re-read it when it changes; neither restarts.
const WebhooksFileKey = "webhooks.json"

// WebhooksFile is the resolved delivery configuration.
type WebhooksFile struct {
	Webhooks []ResolvedWebhook `json:"webhooks"`
	// RedeliverDead is spec.delivery.redeliverDead: a new value moves the
	// dead events back to pending.
	RedeliverDead string `json:"redeliverDead,omitempty"`
}

// ResolvedWebhook is a webhook with its URL, signing secrets and CA read
// from their Secrets. Error, when set, says why it cannot be delivered to
// (a missing Secret, a URL not allowed): its events wait, pending.
type ResolvedWebhook struct {
	Name           string         `json:"name"`
	URL            string         `json:"url,omitempty"`
	SigningSecrets []string       `json:"signingSecrets,omitempty"`
	CA             string         `json:"ca,omitempty"`
	Events         []WebhookEvent `json:"events"`
	InsecureHTTP   bool           `json:"insecureHTTP,omitempty"`
	Error          string         `json:"error,omitempty"`
}

// WebhookSigningSecretKey is the key of the sale's Secret <sale>-sale that
// holds the signing secret the operator generated for a webhook without
// signingSecretRef.
func WebhookSigningSecretKey(webhook string) string {
	return "webhook-" + webhook + "-signing-secret"
}

// IsWebhookSigningSecretKey says whether a key of <sale>-sale is a
// generated webhook signing secret.
func IsWebhookSigningSecretKey(key string) bool {
	return strings.HasPrefix(key, "webhook-") && strings.HasSuffix(key, "-signing-secret")
}

// CheckWebhookURL is the rule both sides apply to an endpoint's URL:
// https, or http with insecureHTTP; a host; no user info (credentials in a
// URL end up in logs). An empty answer means allowed.
func CheckWebhookURL(raw string, insecureHTTP bool) string {
	u, err := parseURL(raw)
	switch {
	case err != nil:
		return "the URL does not parse: " + err.Error()
	case u.Scheme == "http" && !insecureHTTP:
		return "the URL is http://: use https://, or set insecureHTTP: true for an in-cluster receiver"
	case u.Scheme != "https" && u.Scheme != "http":
		return "the URL's scheme must be https (or http with insecureHTTP)"
	case u.Host == "":
		return "the URL has no host"
	case u.User != nil:
		return "the URL carries credentials: put them nowhere, the signature authenticates the sender"
	}
	return ""
}

func parseURL(raw string) (*url.URL, error) { return url.Parse(strings.TrimSpace(raw)) }
