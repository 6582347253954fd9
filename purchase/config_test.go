package purchase_test

import (
	"errors"
	"testing"

	"github.com/flux-order/flux-order/purchase"
)

// FuzzDecodePurchase: whatever the body and key, decoding never panics;
// whatever it accepts is a valid request, and encoding/json reads the same
// object to the same buyer (before NFC). The seeds run in every `go test`.
func TestConfigValidate_NamesTheFlag(t *testing.T) {
	good := purchase.Config{Sale: "s", Tickets: 1, RedisAddr: "r:1", DatabaseURL: "postgres://x", Listen: ":8080", LockTTL: purchase.MinLockTTL}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]func(*purchase.Config){
		"sale":          func(c *purchase.Config) { c.Sale = "Bad_Name" },
		"tickets":       func(c *purchase.Config) { c.Tickets = 10_000_001 },
		"redis-url":     func(c *purchase.Config) { c.RedisAddr = "" },
		"database-url":  func(c *purchase.Config) { c.DatabaseURL = "" },
		"lock-ttl":      func(c *purchase.Config) { c.LockTTL = purchase.MaxLockTTL + 1 },
		"max-per-buyer": func(c *purchase.Config) { c.MaxPerBuyer = -1 },
		"ends-at": func(c *purchase.Config) {
			c.Schedule.StartsAt = c.Schedule.StartsAt.AddDate(2030, 0, 0)
			c.Schedule.EndsAt = c.Schedule.StartsAt
		},
	}
	for flag, mutate := range cases {
		c := good
		mutate(&c)
		var fe *purchase.FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Flag != flag {
			t.Errorf("%s: want a purchase.FieldError naming --%s, got %v", flag, flag, err)
		}
	}
}
