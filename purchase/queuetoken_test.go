package purchase

import (
	"encoding/json"
	"testing"
	"time"
)

func TestQueueBody_SameAsEncodingJSON(t *testing.T) {
	pos, wait, zero := int64(42), int64(3), int64(0)
	exp := time.Date(2027, 1, 10, 10, 10, 3, 123456000, time.UTC)
	signer := newTokenSigner([]byte("k"), "sale")
	for _, b := range []queueBody{
		{State: stateWaiting},
		{QueueID: signer.queueID(queueTicket{Buyer: "alice", Seq: 7, JoinedAt: exp}), State: stateWaiting, Position: &pos, EstimatedWaitSeconds: &wait},
		{State: stateAdmitted, Position: &zero, EstimatedWaitSeconds: &zero, Pass: signer.pass("alice", exp), PassExpiresAt: &exp},
		{State: stateSoldOut},
	} {
		want, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(appendQueueBody(nil, b)); got != string(want)+"\n" {
			t.Fatalf("hand-written body differs from encoding/json:\n got %s\nwant %s", got, want)
		}
	}
}

func TestTokens_RoundTripAndRefuseTampering(t *testing.T) {
	s := newTokenSigner([]byte("secret"), "sale-a")
	q := queueTicket{Buyer: "ünïcode buyer", Seq: 1 << 40, JoinedAt: time.UnixMicro(1_700_000_000_123_456)}
	id := s.queueID(q)
	got, err := s.parseQueueID(id)
	if err != nil || got.Buyer != q.Buyer || got.Seq != q.Seq || !got.JoinedAt.Equal(q.JoinedAt) {
		t.Fatalf("round trip: got %+v %v, want %+v", got, err, q)
	}
	if _, err := newTokenSigner([]byte("secret"), "sale-b").parseQueueID(id); err == nil {
		t.Fatal("a queue id of another sale must not verify")
	}
	for i := range len(id) {
		b := []byte(id)
		b[i] ^= 1
		if _, err := s.parseQueueID(string(b)); err == nil {
			t.Fatalf("a queue id with character %d changed verified", i)
		}
	}
	now := time.Now()
	pass := s.pass("alice", now.Add(time.Minute))
	if s.checkPass(pass, "alice", now) != nil || s.checkPass(pass, "bob", now) == nil || s.checkPass(pass, "alice", now.Add(time.Minute)) == nil {
		t.Fatal("a pass verifies for its buyer until it expires, never for another buyer")
	}
	if s.checkPass(id, "alice", now) == nil {
		t.Fatal("a queue id is not a pass")
	}
}

// BenchmarkCheckPass is what a waiting room adds to every purchase and
// hold: one HMAC-SHA256 over a pass and a buyer id.
func BenchmarkCheckPass(b *testing.B) {
	s := newTokenSigner([]byte("secret"), "sale")
	now := time.Now()
	pass := s.pass("buyer-42", now.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if s.checkPass(pass, "buyer-42", now) != nil {
			b.Fatal("refused")
		}
	}
}
