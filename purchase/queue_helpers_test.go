package purchase_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/flux-order/flux-order/purchase"
	"github.com/flux-order/flux-order/purchase/httpapi"
	"github.com/flux-order/flux-order/purchase/orderstore"
	"github.com/flux-order/flux-order/purchase/purchasetest"
	"github.com/flux-order/flux-order/purchase/waitingroom"
)

// withQueue turns the sale's waiting room on.
func withQueue(wr waitingroom.Settings) func(*purchase.Config) {
	return func(c *purchase.Config) { c.WaitingRoom = wr }
}

// newQueueSale is a sale with a waiting room served by pods pods, each
// pod's view of the queue loaded.
func newQueueSale(t testing.TB, tickets int64, pods int, opts ...func(*purchase.Config)) *testSale {
	t.Helper()
	s := newTestSale(t, tickets, opts...)
	for len(s.Pods) < pods {
		s.AddPod()
	}
	return s
}

// queueAnswer is a join's or a poll's answer.
type queueAnswer struct {
	Status int
	Code   string
	Body   httpapi.QueueBody
	Header http.Header
}

func (s *testSale) queueDo(req *http.Request) queueAnswer {
	s.T.Helper()
	resp, err := s.Client.Do(req)
	if err != nil {
		return queueAnswer{Status: -1, Code: err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := queueAnswer{Status: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(raw, &a.Body); err != nil {
			s.T.Errorf("answer %d is not a queue body: %s", resp.StatusCode, raw)
		}
		return a
	}
	var p httpapi.Problem
	_ = json.Unmarshal(raw, &p)
	a.Code = p.Code
	return a
}

func (s *testSale) join(pod int, buyer string) queueAnswer {
	req, _ := http.NewRequest(http.MethodPost, s.Pods[pod].URL+"/v1/queue", strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyer)))
	req.Header.Set("Content-Type", "application/json")
	return s.queueDo(req)
}

func (s *testSale) poll(pod int, queueID string) queueAnswer {
	req, _ := http.NewRequest(http.MethodGet, s.Pods[pod].URL+"/v1/queue/"+queueID, nil)
	return s.queueDo(req)
}

// buyWithPass is POST /v1/tickets/{id}/purchase on pod 0 with a pass ("":
// none).
func (s *testSale) buyWithPass(ticket int64, buyer, pass string) purchasetest.Answer {
	h := map[string]string{"Content-Type": "application/json"}
	if pass != "" {
		h["Authorization"] = "Bearer " + pass
	}
	return s.Post(0, fmt.Sprintf("/v1/tickets/%d/purchase", ticket), fmt.Sprintf(`{"buyerId":%q}`, buyer), h)
}

// queueRows is the queue's truth in Postgres: buyer → slot (a shuffled
// prequeue's slot computed from the seed the shuffle stored, as every pod
// computes it), and the serving slot.
func (s *testSale) queueRows() (map[string]int64, int64) {
	s.T.Helper()
	ctx := context.Background()
	var st orderstore.QueueState
	if err := s.DB.QueryRow(ctx, `SELECT serving_slot, shuffle_seed, coalesce(prequeue_seq, 0) FROM queue_state`).
		Scan(&st.ServingSlot, &st.ShuffleSeed, &st.PrequeueSeq); err != nil {
		s.T.Fatal(err)
	}
	rows, err := s.DB.Query(ctx, `SELECT buyer_id, seq FROM queue`)
	if err != nil {
		s.T.Fatal(err)
	}
	defer rows.Close()
	slots := map[string]int64{}
	for rows.Next() {
		var b string
		var seq int64
		if err := rows.Scan(&b, &seq); err != nil {
			s.T.Fatal(err)
		}
		slots[b] = waitingroom.Slot(st, seq)
	}
	if err := rows.Err(); err != nil {
		s.T.Fatal(err)
	}
	return slots, st.ServingSlot
}

// queueState is the pod's view of the queue (zero before its first read).
func queueState(p *purchasetest.Pod) orderstore.QueueState {
	st, _ := p.Svc.Queue.View()
	return st
}
