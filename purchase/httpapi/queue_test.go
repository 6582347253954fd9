package httpapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/flux-order/flux-order/purchase/waitingroom"
)

func TestQueueBody_SameAsEncodingJSON(t *testing.T) {
	pos, wait, zero := int64(42), int64(3), int64(0)
	exp := time.Date(2027, 1, 10, 10, 10, 3, 123456000, time.UTC)
	signer := waitingroom.NewSigner([]byte("k"), "sale")
	for _, b := range []QueueBody{
		{State: waitingroom.StateWaiting},
		{QueueID: signer.QueueID(waitingroom.Ticket{Buyer: "alice", Seq: 7, JoinedAt: exp}), State: waitingroom.StateWaiting, Position: &pos, EstimatedWaitSeconds: &wait},
		{State: waitingroom.StateAdmitted, Position: &zero, EstimatedWaitSeconds: &zero, Pass: signer.Pass("alice", exp), PassExpiresAt: &exp},
		{State: waitingroom.StateSoldOut},
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

// BenchmarkQueueBody is the evidence for appendQueueBody: a poll's answer
// appended by hand against encoding/json's, in the same run (make bench-go;
// docs/benchmarks.md).
func BenchmarkQueueBody(b *testing.B) {
	pos, wait := int64(4211), int64(29)
	exp := time.Date(2027, 1, 10, 10, 10, 3, 123456000, time.UTC)
	signer := waitingroom.NewSigner([]byte("k"), "sale")
	body := QueueBody{QueueID: signer.QueueID(waitingroom.Ticket{Buyer: "buyer-4211", Seq: 4211, JoinedAt: exp}),
		State: waitingroom.StateWaiting, Position: &pos, EstimatedWaitSeconds: &wait}
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = appendQueueBody(make([]byte, 0, 256), body)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := json.Marshal(body)
			_ = append(out, '\n')
		}
	})
}
