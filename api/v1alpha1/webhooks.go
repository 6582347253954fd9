package v1alpha1

import (
	"errors"
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
//
// The answer is always one of a few fixed sentences, never a part of raw:
// it reaches the FlashSale's status, its events and the pods' logs, and raw
// is the value of whatever Secret key urlSecretRef names, which the person
// who wrote the sale may not be allowed to read (docs/security.md).
func CheckWebhookURL(raw string, insecureHTTP bool) string {
	u, err := parseURL(raw)
	switch {
	case err != nil:
		return urlParseProblem(err)
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

// urlParseProblem says what kind of url.Parse error err is without its
// text: a *url.Error quotes the whole input, and several of its inner
// errors quote a part of it (an escape, a host's character, the port).
func urlParseProblem(err error) string {
	var escape url.EscapeError
	var host url.InvalidHostError
	msg := err.Error() // only matched, never returned
	switch {
	case errors.As(err, &escape):
		return "the URL does not parse: it has an invalid %-escape"
	case errors.As(err, &host):
		return "the URL does not parse: its host has an invalid character"
	case strings.Contains(msg, "invalid control character"):
		return "the URL does not parse: it has a control character (a line break, a tab…)"
	case strings.Contains(msg, "invalid port"):
		return "the URL does not parse: its port is not a number"
	case strings.Contains(msg, "missing protocol scheme"):
		return "the URL does not parse: it has no scheme"
	}
	return "the URL does not parse"
}
