package v1alpha1

import (
	"strings"
	"testing"
)

// A URL that does not parse is answered without any of its text: it comes
// from a Secret the sale's author may not read, and the answer reaches the
// FlashSale's status and events (docs/security.md, Who is out there).
func TestCheckWebhookURL_NeverEchoesTheURL(t *testing.T) {
	const secret = "s3cr3t-T0KEN"
	pem := "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI" + secret + "\n-----END EC PRIVATE KEY-----\n"
	for name, raw := range map[string]string{
		"a PEM private key":                 pem,
		"an invalid escape":                 "https://hooks.example.com/services/" + secret + "%zz",
		"an escape in the host":             "https://" + secret + "%zz.example.com/",
		"a control character":               "https://hooks.example.com/" + secret + "\x7f",
		"a line break":                      "https://hooks.example.com/" + secret + "\nx",
		"a port that is no number":          "https://hooks.example.com:" + secret + "/x",
		"a host's bad character":            "https://" + secret + " x.example.com/",
		"no scheme":                         "://" + secret,
		"a colon in the first path segment": secret + ":x/y",
		"an unclosed IPv6 host":             "https://[::1" + secret + "/x",
		"bad user info":                     "https://a b" + secret + "@host/",
		"an invalid IPv6 zone":              "https://[fe80::1%zz" + secret + "]/",
	} {
		why := CheckWebhookURL(raw, false)
		if why == "" {
			t.Errorf("%s: allowed", name)
			continue
		}
		if strings.Contains(why, secret) || strings.Contains(why, "zz") || strings.Contains(why, "BEGIN") {
			t.Errorf("%s: the answer repeats the URL: %q", name, why)
		}
	}
}
