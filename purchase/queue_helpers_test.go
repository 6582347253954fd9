package purchase

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flux-order/flux-order/internal/testservers"
)

// withQueue turns the sale's waiting room on.
func withQueue(wr WaitingRoom) func(*Config) {
	return func(c *Config) { c.WaitingRoom = wr }
}

// newQueueSale is a sale with a waiting room served by pods pods, each
// pod's view of the queue loaded.
func newQueueSale(t testing.TB, tickets int64, pods int, opts ...func(*Config)) *testSale {
	t.Helper()
	s := newTestSale(t, tickets, opts...)
	for len(s.pods) < pods {
		s.addPod()
	}
	for i, p := range s.pods {
		testservers.Eventually(t, 5*time.Second, fmt.Sprintf("pod %d's queue view", i), func() bool { return p.svc.queue.view.Load() != nil })
	}
	return s
}

// queueAnswer is a join's or a poll's answer.
type queueAnswer struct {
	status int
	code   string
	body   queueBody
	header http.Header
}

func (s *testSale) queueDo(req *http.Request) queueAnswer {
	s.t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		return queueAnswer{status: -1, code: err.Error()}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := queueAnswer{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			s.t.Errorf("answer %d is not a queue body: %s", resp.StatusCode, raw)
		}
		return a
	}
	var p Problem
	_ = json.Unmarshal(raw, &p)
	a.code = p.Code
	return a
}

func (s *testSale) join(pod int, buyer string) queueAnswer {
	req, _ := http.NewRequest(http.MethodPost, s.pods[pod].srv.URL+"/v1/queue", strings.NewReader(fmt.Sprintf(`{"buyerId":%q}`, buyer)))
	req.Header.Set("Content-Type", "application/json")
	return s.queueDo(req)
}

func (s *testSale) poll(pod int, queueID string) queueAnswer {
	req, _ := http.NewRequest(http.MethodGet, s.pods[pod].srv.URL+"/v1/queue/"+queueID, nil)
	return s.queueDo(req)
}

// buyWithPass is POST /v1/tickets/{id}/purchase on pod 0 with a pass ("":
// none).
func (s *testSale) buyWithPass(ticket int64, buyer, pass string) answer {
	h := map[string]string{"Content-Type": "application/json"}
	if pass != "" {
		h["Authorization"] = "Bearer " + pass
	}
	return s.post(0, fmt.Sprintf("/v1/tickets/%d/purchase", ticket), fmt.Sprintf(`{"buyerId":%q}`, buyer), h)
}

// queueRows is the queue's truth in Postgres: buyer → slot, and the
// serving slot.
func (s *testSale) queueRows() (map[string]int64, int64) {
	s.t.Helper()
	ctx := context.Background()
	rows, err := s.db.Query(ctx, `SELECT buyer_id, slot FROM queue`)
	if err != nil {
		s.t.Fatal(err)
	}
	defer rows.Close()
	slots := map[string]int64{}
	for rows.Next() {
		var b string
		var slot int64
		if err := rows.Scan(&b, &slot); err != nil {
			s.t.Fatal(err)
		}
		slots[b] = slot
	}
	var serving int64
	if err := s.db.QueryRow(ctx, `SELECT serving_slot FROM queue_state`).Scan(&serving); err != nil {
		s.t.Fatal(err)
	}
	return slots, serving
}
