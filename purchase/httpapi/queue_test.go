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
