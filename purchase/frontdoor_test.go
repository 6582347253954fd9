package purchase_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// Issue 17, defect 1: a keyed hold replayed after it was released must not
// put its Redis marker back: Postgres, GET /v1/availability and the page
// all say the seat is free, so a buyer must be able to take it.
func TestHold_KeyedReplayOfAReleasedHold_DoesNotBlockTheSeat(t *testing.T) {
	s := newTestSale(t, 10, withHolds(time.Minute))
	h, status, code := s.tryHold(0, 5, "alice", "hold-k1")
	if status != http.StatusCreated {
		t.Fatalf("hold: %d %s", status, code)
	}
	if st := s.releaseHold(0, h.HoldID); st != http.StatusNoContent {
		t.Fatalf("release: %d", st)
	}
	_, status, code = s.tryHold(0, 5, "alice", "hold-k1") // the same request again
	if status != http.StatusGone || code != "hold_expired" {
		t.Fatalf("a replay of a released hold: want 410 hold_expired, got %d %s", status, code)
	}
	if a := s.BuyOn(0, 5, "bob", ""); a.Status != http.StatusCreated {
		t.Fatalf("seat 5 is free in Postgres: bob must buy it, got %d %s", a.Status, a.Code)
	}
}

// Issue 17, defect 4: concurrent retries of one keyed hold meet in
// Postgres: every one answers the one hold, none ticket_held.
func TestHold_ConcurrentRetriesOfOneKeyedHold_AllAnswerTheHold(t *testing.T) {
	for round := range 5 {
		s := newTestSale(t, 10, withHolds(time.Minute))
		const retries = 8
		s.AddPod() // odd rounds spread the retries over two pods
		var wg sync.WaitGroup
		ids := make(chan uuid.UUID, retries)
		for i := range retries {
			wg.Go(func() {
				h, status, code := s.tryHold(i%2*(round%2), 3, "carol", "retry-key")
				if status != http.StatusCreated {
					t.Errorf("round %d: a retry of carol's own hold answered %d %s", round, status, code)
					return
				}
				ids <- h.HoldID
			})
		}
		wg.Wait()
		close(ids)
		var first uuid.UUID
		for id := range ids {
			if first == uuid.Nil {
				first = id
			} else if id != first {
				t.Fatalf("round %d: retries answered two holds: %s and %s", round, first, id)
			}
		}
		s.liveHoldsPerSeat()
	}
}

// Issue 17, defect 7: every key is derived from the sale secret under its
// own label. A purchase whose buyer id and Idempotency-Key spell the waiting
// room's derivation message must not get the pass-signing key back as its
// order id.
func TestPurchase_CraftedKeyedOrderID_RevealsNoTokenKey(t *testing.T) {
	s := newTestSale(t, 10)
	label := "flux-order waiting room tokens v1"
	a := s.BuyOn(0, 1, label, s.Cfg.Sale)
	if a.Status != http.StatusCreated {
		t.Fatalf("purchase: %d %s", a.Status, a.Code)
	}
	m := hmac.New(sha256.New, []byte(s.Cfg.SaleSecret))
	m.Write([]byte(label + "\x00" + s.Cfg.Sale))
	tokenKey := m.Sum(nil)
	id := a.Order.ID
	same := 0
	for i := range id {
		if i != 6 && i != 8 && id[i] == tokenKey[i] { // 6 and 8 carry the version and variant
			same++
		}
	}
	if same > 4 {
		t.Fatalf("the order id %s repeats %d of 14 bytes of the pass-signing key", id, same)
	}
}

// Issue 17, defect 6: retries are treated alike. A keyed hold retried after
// the buyer's pass expired finds the hold it placed (nothing new is held),
// as a keyed purchase retry finds its order.
func TestQueue_KeyedHoldRetryAfterThePassExpired_FindsItsHold(t *testing.T) {
	s := newQueueSale(t, 10, 1, withQueue(waitingroom.Settings{AdmitPerSecond: 50}), withHolds(time.Minute))
	signer := s.Pods[0].Svc.Queue.Signer()
	valid := signer.Pass("carol", time.Now().Add(time.Minute))
	expired := signer.Pass("carol", time.Now().Add(-time.Second))
	h := func(pass, key string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + pass, "Idempotency-Key": key}
	}
	first, status, code := s.holdCall(0, http.MethodPost, "/v1/tickets/4/hold", `{"buyerId":"carol"}`, h(valid, "hk1"))
	if status != http.StatusCreated {
		t.Fatalf("with a valid pass: want 201, got %d %s", status, code)
	}
	again, status, code := s.holdCall(0, http.MethodPost, "/v1/tickets/4/hold", `{"buyerId":"carol"}`, h(expired, "hk1"))
	if status != http.StatusCreated || again.HoldID != first.HoldID {
		t.Fatalf("a keyed hold retry after the pass expired: want the same hold, got %d %s %+v", status, code, again)
	}
	if _, status, code := s.holdCall(0, http.MethodPost, "/v1/tickets/5/hold", `{"buyerId":"carol"}`, h(expired, "hk2")); status != http.StatusForbidden || code != "pass_invalid" {
		t.Fatalf("a new key with an expired pass: want 403 pass_invalid, got %d %s", status, code)
	}
	if held := s.liveHoldsPerSeat(); len(held) != 1 {
		t.Fatalf("want 1 live hold, got %v", held)
	}
}
