package loadtest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{URL: "http://127.0.0.1:8080", Scenario: HotSeat, Seat: 1, Buyers: 10,
		Duration: time.Second, Timeout: time.Second}
}

func TestValidate_BadValues_ErrorNamesTheFlag(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
		flag   string
	}{
		{"missing url", func(c *Config) { c.URL = "" }, "--url"},
		{"url without scheme", func(c *Config) { c.URL = "127.0.0.1:8080" }, "--url"},
		{"ftp url", func(c *Config) { c.URL = "ftp://host" }, "--url"},
		{"url without host", func(c *Config) { c.URL = "http:///v1" }, "--url"},
		{"url with a query", func(c *Config) { c.URL = "http://host/?x=1" }, "--url"},
		{"host with a line break", func(c *Config) { c.Host = "a\r\nX-Evil: 1" }, "--host"},
		{"unknown scenario", func(c *Config) { c.Scenario = "storm" }, "--scenario"},
		{"seat zero", func(c *Config) { c.Seat = 0 }, "--seat"},
		{"negative seats", func(c *Config) { c.Seats = -1 }, "--seats"},
		{"no buyers", func(c *Config) { c.Buyers = 0 }, "--buyers"},
		{"negative concurrency", func(c *Config) { c.Concurrency = -1 }, "--concurrency"},
		{"negative rate", func(c *Config) { c.Rate = -5 }, "--rate"},
		{"hold-confirm at a rate", func(c *Config) { c.Scenario, c.Rate = HoldConfirm, 100 }, "--rate"},
		{"negative think time", func(c *Config) { c.ThinkTime = -time.Second }, "--think-time"},
		{"confirm share above 1", func(c *Config) { c.ConfirmShare = 1.5 }, "--confirm-share"},
		{"negative release share", func(c *Config) { c.ReleaseShare = -0.1 }, "--release-share"},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }, "--duration"},
		{"negative requests", func(c *Config) { c.Duration, c.Requests = 0, -1 }, "--requests"},
		{"no bound at all", func(c *Config) { c.Duration, c.Requests = 0, 0 }, "--duration"},
		{"until sold out on one seat", func(c *Config) { c.UntilSoldOut = true }, "--until-sold-out"},
		{"queue bounded by requests only", func(c *Config) { c.Scenario, c.Duration, c.Requests = Queue, 0, 100 }, "--duration"},
		{"zero timeout", func(c *Config) { c.Timeout = 0 }, "--timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.change(&cfg)
			err := cfg.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("expected a *FieldError naming %s, got %v", c.flag, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, c.flag+":") && !strings.HasPrefix(msg, c.flag+" ") || strings.Contains(msg, "\n") {
				t.Fatalf("expected one line starting with %s, got %q", c.flag, msg)
			}
		})
	}
}

func TestValidate_GoodValues_Pass(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Config)
	}{
		{"hot seat for a duration", func(*Config) {}},
		{"requests only", func(c *Config) { c.Duration, c.Requests = 0, 100 }},
		{"open model", func(c *Config) { c.Rate = 1000 }},
		{"sell-out until sold out", func(c *Config) { c.Scenario, c.UntilSoldOut = SellOut, true }},
		{"https ingress with a host", func(c *Config) { c.URL, c.Host = "https://127.0.0.1:18443/", "demo.example" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := validConfig()
			c.change(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatalf("expected no error, got %v", err)
			}
		})
	}
}

func TestParseTarget_SplitsWhatToDialFromWhatToSend(t *testing.T) {
	cases := []struct {
		url, host                        string
		wantAddr, wantHost, wantPrefix   string
		wantServerName, wantBase, scheme string
	}{
		{"http://127.0.0.1:8080", "", "127.0.0.1:8080", "127.0.0.1:8080", "", "127.0.0.1", "http://127.0.0.1:8080", "http"},
		{"http://sale.example/", "", "sale.example:80", "sale.example", "", "sale.example", "http://sale.example", "http"},
		{"https://sale.example/shop/", "", "sale.example:443", "sale.example", "/shop", "sale.example", "https://sale.example/shop", "https"},
		{"http://127.0.0.1:18080", "demo.sales.example", "127.0.0.1:18080", "demo.sales.example", "", "demo.sales.example", "http://127.0.0.1:18080", "http"},
		{"http://[::1]:8080", "", "[::1]:8080", "[::1]:8080", "", "::1", "http://[::1]:8080", "http"},
	}
	for _, c := range cases {
		t.Run(c.url+" "+c.host, func(t *testing.T) {
			got, err := parseTarget(c.url, c.host)
			if err != nil {
				t.Fatal(err)
			}
			want := target{base: c.wantBase, scheme: c.scheme, addr: c.wantAddr, host: c.wantHost, prefix: c.wantPrefix}
			if got != want || got.serverName() != c.wantServerName {
				t.Fatalf("expected %+v (server name %s), got %+v (server name %s)", want, c.wantServerName, got, got.serverName())
			}
		})
	}
}
