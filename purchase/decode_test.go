package purchase

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// FuzzDecodePurchase: whatever the body and key, decoding never panics;
// whatever it accepts is a valid request, and encoding/json reads the same
// object to the same buyer (before NFC). The seeds run in every `go test`.
func FuzzDecodePurchase(f *testing.F) {
	for _, seed := range []struct{ body, key string }{
		{`{"buyerId":"alice"}`, ""},
		{`{"buyerId":"alice"}`, "k-1"},
		{` { "buyerId" : "al\u0069ce" } `, ""},
		{`{"buyerId":""}`, ""},
		{`{"buyerId":null}`, ""},
		{`{"buyerId":"a","extra":1}`, ""},
		{`{"buyerId":"a","buyerId":"b"}`, ""},
		{`{"BUYERID":"a"}`, ""},
		{`{"buyerId":"a"}{"buyerId":"b"}`, ""},
		{`[]`, ""},
		{`null`, ""},
		{`{"buyerId":"\u0000"}`, ""},
		{`{"buyerId":"\ud800"}`, ""},
		{`{"buyerId":"\ud83d\ude00"}`, ""},
		{`{"buyerId":"alice\u200b"}`, ""},
		{`{"buyerId":"   "}`, ""},
		{`{"buyerId":"e\u0301"}`, ""},
		{`{"buyerId":"` + strings.Repeat("é", 100) + `"}`, ""},
		{"{\"buyerId\":\"\xff\"}", ""},
		{"\xff\xfe", "\x00"},
		{`{"buyerId":1e999}`, ""},
	} {
		f.Add([]byte(seed.body), seed.key)
	}
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		req, err := decodePurchase(body, key)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("every refusal must be invalid_request, got %v", err)
			}
			return
		}
		if req.BuyerID == "" || len(req.BuyerID) > maxBuyerIDLen || !utf8.ValidString(req.BuyerID) || !norm.NFC.IsNormalString(req.BuyerID) {
			t.Fatalf("accepted a bad buyerId %q", req.BuyerID)
		}
		for _, r := range req.BuyerID {
			if !unicode.In(r, visible...) || r == utf8.RuneError {
				t.Fatalf("accepted %U in buyerId %q", r, req.BuyerID)
			}
		}
		if len(req.IdempotencyKey) > maxIdemKeyLen || req.IdempotencyKey != key {
			t.Fatalf("accepted a bad key %q", req.IdempotencyKey)
		}
		var std struct {
			BuyerID string `json:"buyerId"`
		}
		if err := json.Unmarshal(body, &std); err != nil || norm.NFC.String(std.BuyerID) != req.BuyerID {
			t.Fatalf("encoding/json reads %q as %q (%v), we read %q", body, std.BuyerID, err, req.BuyerID)
		}
	})
}

func TestConfigValidate_NamesTheFlag(t *testing.T) {
	good := Config{Sale: "s", Tickets: 1, RedisAddr: "r:1", DatabaseURL: "postgres://x", Listen: ":8080", LockTTL: MinLockTTL}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	cases := map[string]func(*Config){
		"sale":          func(c *Config) { c.Sale = "Bad_Name" },
		"tickets":       func(c *Config) { c.Tickets = 10_000_001 },
		"redis-url":     func(c *Config) { c.RedisAddr = "" },
		"database-url":  func(c *Config) { c.DatabaseURL = "" },
		"lock-ttl":      func(c *Config) { c.LockTTL = MaxLockTTL + 1 },
		"max-per-buyer": func(c *Config) { c.MaxPerBuyer = -1 },
		"ends-at": func(c *Config) {
			c.Schedule.StartsAt = c.Schedule.StartsAt.AddDate(2030, 0, 0)
			c.Schedule.EndsAt = c.Schedule.StartsAt
		},
	}
	for flag, mutate := range cases {
		c := good
		mutate(&c)
		var fe *FieldError
		if err := c.Validate(); !errors.As(err, &fe) || fe.Flag != flag {
			t.Errorf("%s: want a FieldError naming --%s, got %v", flag, flag, err)
		}
	}
}

func TestSoldSet_RemembersOnlyItsInventory(t *testing.T) {
	s := newSoldSet(130)
	for _, id := range []int64{1, 63, 64, 130} {
		if s.has(id) {
			t.Fatalf("%d sold before add", id)
		}
		s.add(id)
		if !s.has(id) {
			t.Fatalf("%d not sold after add", id)
		}
	}
	if s.has(2) || s.has(129) {
		t.Fatal("neighbours must stay unsold")
	}
	s.add(10_000) // beyond the inventory: ignored, no panic
	if s.has(10_000) {
		t.Fatal("seats beyond the inventory are not remembered")
	}
}

func TestHeldCache_ForgetsAfterItsWindow(t *testing.T) {
	c := newHeldCache(20 * time.Millisecond)
	now := time.Now()
	if c.held(7, now) {
		t.Fatal("nothing seen yet")
	}
	c.remember(7, now)
	if !c.held(7, now.Add(10*time.Millisecond)) {
		t.Fatal("seen held 10ms ago: must still answer held")
	}
	if c.held(7, now.Add(21*time.Millisecond)) {
		t.Fatal("past the window the pod must ask Redis again")
	}
	c.remember(8, now)
	c.forget(8)
	if c.held(8, now) {
		t.Fatal("forgotten seats are not held")
	}
	c.remember(7+heldSlots, now) // a collision evicts seat 7, never makes it look like another seat
	if c.held(7, now) || !c.held(7+heldSlots, now) {
		t.Fatal("a colliding seat must evict, not alias")
	}
	if heldMemory(5*time.Second) != maxHeldMemory || heldMemory(100*time.Millisecond) != 10*time.Millisecond {
		t.Fatal("the memory window is a tenth of the lock TTL, capped")
	}
}
