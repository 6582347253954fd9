package waitingroom

import (
	"testing"
	"time"
)

func TestTokens_RoundTripAndRefuseTampering(t *testing.T) {
	s := NewSigner([]byte("secret"), "sale-a")
	q := Ticket{Buyer: "ünïcode buyer", Seq: 1 << 40, JoinedAt: time.UnixMicro(1_700_000_000_123_456)}
	id := s.QueueID(q)
	got, err := s.ParseQueueID(id)
	if err != nil || got.Buyer != q.Buyer || got.Seq != q.Seq || !got.JoinedAt.Equal(q.JoinedAt) {
		t.Fatalf("round trip: got %+v %v, want %+v", got, err, q)
	}
	if _, err := NewSigner([]byte("secret"), "sale-b").ParseQueueID(id); err == nil {
		t.Fatal("a queue id of another sale must not verify")
	}
	for i := range len(id) {
		b := []byte(id)
		b[i] ^= 1
		if _, err := s.ParseQueueID(string(b)); err == nil {
			t.Fatalf("a queue id with character %d changed verified", i)
		}
	}
	now := time.Now()
	pass := s.Pass("alice", now.Add(time.Minute))
	if s.CheckPass(pass, "alice", now) != nil || s.CheckPass(pass, "bob", now) == nil || s.CheckPass(pass, "alice", now.Add(time.Minute)) == nil {
		t.Fatal("a pass verifies for its buyer until it expires, never for another buyer")
	}
	if s.CheckPass(id, "alice", now) == nil {
		t.Fatal("a queue id is not a pass")
	}
}

// BenchmarkCheckPass is what a waiting room adds to every purchase and
// hold: one HMAC-SHA256 over a pass and a buyer id.
func BenchmarkCheckPass(b *testing.B) {
	s := NewSigner([]byte("secret"), "sale")
	now := time.Now()
	pass := s.Pass("buyer-42", now.Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		if s.CheckPass(pass, "buyer-42", now) != nil {
			b.Fatal("refused")
		}
	}
}
