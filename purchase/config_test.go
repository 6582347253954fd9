package purchase_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

func TestConfigValidate_NamesTheFlag(t *testing.T) {
	good := purchase.Config{Sale: "s", Tickets: 1, RedisAddr: "r:1", DatabaseURL: "postgres://x", Listen: ":8080", LockTTL: purchase.MinLockTTL,
		SaleSecret: "0123456789abcdef0123456789abcdef"}
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
		// Issue 18: the group commit's bounds.
		"confirm-batch-max": func(c *purchase.Config) {
			c.Batching = orderstore.Batching{Max: orderstore.MaxBatchMax + 1, Flushers: 1}
		},
		"confirm-batch-window":   func(c *purchase.Config) { c.Batching = orderstore.Batching{Max: 8, Window: time.Second, Flushers: 1} },
		"confirm-batch-flushers": func(c *purchase.Config) { c.Batching = orderstore.Batching{Max: 8} },
		// Issue 17, defect 7: no pod without a sale secret, nor with a short one.
		"sale-secret": func(c *purchase.Config) { c.SaleSecret = "" },
		// Issue 19: an admin token is long, or absent (admin API off).
		"admin-token": func(c *purchase.Config) { c.AdminToken = "short-token" },
		"ends-at": func(c *purchase.Config) {
			c.Schedule.StartsAt = c.Schedule.StartsAt.AddDate(2030, 0, 0)
			c.Schedule.EndsAt = c.Schedule.StartsAt
		},
	}
	short := good
	short.SaleSecret = "short-secret"
	var fe *purchase.FieldError
	if err := short.Validate(); !errors.As(err, &fe) || fe.Flag != "sale-secret" {
		t.Errorf("a %d-byte secret: want --sale-secret refused, got %v", len(short.SaleSecret), err)
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
