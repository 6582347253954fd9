package cmd

import (
	"bytes"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) error {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(&bytes.Buffer{})
	root.SetErr(&bytes.Buffer{})
	return root.ExecuteContext(t.Context())
}

func TestPurchaseCommand_BadValues_OneLineErrorNamingTheFlag(t *testing.T) {
	valid := []string{"purchase", "--sale", "s", "--tickets", "10", "--redis-addr", "r:6379", "--database-url", "postgres://db", "--sale-secret", "0123456789abcdef0123456789abcdef"}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		flag string
	}{
		{"missing sale", nil, []string{"purchase"}, "--sale"},
		{"tickets not a number", nil, append(valid, "--tickets", "many"), "--tickets"},
		{"tickets zero from env", map[string]string{"FLUX_ORDER_TICKETS": "0"}, []string{"purchase", "--sale", "s"}, "--tickets"},
		{"bad env value", map[string]string{"FLUX_ORDER_LOCK_TTL": "soon"}, valid, "--lock-ttl"},
		{"lock ttl too short", nil, append(valid, "--lock-ttl", "10ms"), "--lock-ttl"},
		{"bad time", nil, append(valid, "--starts-at", "tomorrow"), "--starts-at"},
		{"window backwards", nil, append(valid, "--starts-at", "2027-01-02T00:00:00Z", "--ends-at", "2027-01-01T00:00:00Z"), "--ends-at"},
		{"negative limit", nil, append(valid, "--max-per-buyer=-1"), "--max-per-buyer"},
		{"no redis", nil, []string{"purchase", "--sale", "s", "--tickets", "10", "--database-url", "postgres://db"}, "--redis-url"},
		{"both redis url and address", map[string]string{"FLUX_ORDER_REDIS_URL": "redis://u:p@r:6379/0"}, valid, "--redis-url"},
		{"ca file without rediss", nil, []string{"purchase", "--sale", "s", "--tickets", "10", "--redis-url", "redis://r:1/0", "--redis-ca-file", "/ca.crt", "--database-url", "postgres://db"}, "--redis-ca-file"},
		{"a scheme the url has not", map[string]string{"FLUX_ORDER_REDIS_SCHEME": "rediss"}, []string{"purchase", "--sale", "s", "--tickets", "10", "--redis-url", "redis://u:secret@r:1/0", "--database-url", "postgres://db"}, "--redis-url"},
		{"an unknown scheme", nil, append(valid, "--redis-scheme", "tls"), "--redis-scheme"},
		{"negative admission rate", nil, append(valid, "--admit-per-second=-1"), "--admit-per-second"},
		{"an issuer without an audience", nil, append(valid, "--buyer-jwt-issuer", "https://id.example.com/", "--buyer-jwks-file", "/jwks.json"), "--buyer-jwt-audience"},
		{"an issuer without keys", nil, append(valid, "--buyer-jwt-issuer", "https://id.example.com/", "--buyer-jwt-audience", "sale"), "--buyer-jwks-file"},
		{"an audience without an issuer", nil, append(valid, "--buyer-jwt-audience", "sale"), "--buyer-jwt-issuer"},
		{"negative active cap", map[string]string{"FLUX_ORDER_MAX_ACTIVE_BUYERS": "-2"}, valid, "--max-active-buyers"},
		{"unknown queue order", nil, append(valid, "--admit-per-second", "10", "--queue-order", "lifo"), "--queue-order"},
		{"pass ttl too short", map[string]string{"FLUX_ORDER_PASS_TTL": "1s"}, append(valid, "--admit-per-second", "10"), "--pass-ttl"},
		{"bad join-from", nil, append(valid, "--join-from", "soon"), "--join-from"},
		{"queue opens after the sale", nil, append(valid, "--admit-per-second", "10", "--starts-at", "2027-01-01T00:00:00Z", "--join-from", "2027-01-02T00:00:00Z"), "--join-from"},
		{"drain longer than the grace", nil, append(valid, "--shutdown-grace", "2s", "--drain-delay", "3s"), "--drain-delay"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := run(t, c.env, c.args...)
			if err == nil {
				t.Fatal("want an error")
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, c.flag) {
				t.Fatalf("want one line naming %s, got %q", c.flag, msg)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := envName("database-url"); got != "FLUX_ORDER_DATABASE_URL" {
		t.Fatalf("got %s", got)
	}
}

func TestVersionCommand_Prints(t *testing.T) {
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"version"})
	if err := root.Execute(); err != nil || !strings.HasPrefix(out.String(), "flux-order ") {
		t.Fatalf("version: %v %q", err, out.String())
	}
}
