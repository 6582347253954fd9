package delivery

import (
	"testing"
	"time"
)

// The example of the Standard Webhooks specification (and of svix's
// libraries): our signature must be the one it gives.
func TestSign_SpecificationVector(t *testing.T) {
	const (
		secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		id     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		ts     = 1614265330
		body   = `{"test": 2432232314}`
		want   = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
	)
	got, err := Sign([]string{secret}, id, ts, []byte(body))
	if err != nil || got != want {
		t.Fatalf("Sign = %q, %v; the specification says %q", got, err, want)
	}
	if err := Verify(secret, id, ts, []byte(body), "v1,bm90IGl0 "+want); err != nil {
		t.Fatalf("Verify must accept a header where one signature verifies: %v", err)
	}
	if err := Verify(secret, id, ts+1, []byte(body), want); err == nil {
		t.Fatal("Verify accepted a signature of another timestamp")
	}
}

func TestSign_Rotation_OneSignaturePerSecret(t *testing.T) {
	a, b := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
	h, err := Sign([]string{b, a}, "id", 1, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{a, b} {
		if err := Verify(s, "id", 1, []byte("{}"), h); err != nil {
			t.Errorf("a receiver with %s only must verify %q: %v", s[:10], h, err)
		}
	}
	if _, err := Sign([]string{"nope"}, "id", 1, nil); err == nil {
		t.Error("a secret without whsec_ must be refused")
	}
}

func TestSchedule_DefaultRetriesFor24Hours(t *testing.T) {
	s := DefaultSchedule(time.Second)
	if n := s.Attempts(); n != 36 {
		t.Fatalf("want 36 attempts (1s, 2s ... 2048s, then hourly to 24 h), got %d", n)
	}
	var total time.Duration
	for n := 1; n < s.Attempts(); n++ {
		w := s.Wait(n)
		base := time.Duration(s.base(n)) * time.Second
		if w < base*8/10 || w > base*12/10 {
			t.Fatalf("wait %d = %s, want %s ±20%%", n, w, base)
		}
		total += base
	}
	if total < 24*time.Hour || total > 25*time.Hour {
		t.Fatalf("the waits add up to %s, want the documented 24 h", total)
	}
	if ms := DefaultSchedule(time.Millisecond); ms.Wait(1) > 2*time.Millisecond {
		t.Fatalf("the test unit must scale the waits to milliseconds: %s", ms.Wait(1))
	}
}
