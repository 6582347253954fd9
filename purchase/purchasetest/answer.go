package purchasetest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/flux-order/flux-order/purchase/checkout"
	"github.com/flux-order/flux-order/purchase/httpapi"
)

// Answer is what a buyer saw.
type Answer struct {
	Status  int
	Code    string // problem code, empty on success
	Order   checkout.Order
	OrderID string // the order a 503 names, whose outcome GET /v1/orders/{id} tells
	Header  http.Header
	Latency time.Duration
}

// Post sends a POST to pod's path with body and headers.
func (s *Sale) Post(pod int, path, body string, header map[string]string) Answer {
	req, err := http.NewRequest(http.MethodPost, s.Pods[pod].URL+path, bytes.NewBufferString(body))
	if err != nil {
		s.T.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return s.Do(req)
}

// Do sends req and reads its answer: the order of a 200 or 201, else the
// problem's code ("not-a-problem: <body>" when it is not a problem).
func (s *Sale) Do(req *http.Request) Answer {
	start := time.Now()
	resp, err := s.Client.Do(req)
	if err != nil {
		return Answer{Status: -1, Code: err.Error(), Latency: time.Since(start)}
	}
	defer resp.Body.Close()
	a := Answer{Status: resp.StatusCode, Header: resp.Header, Latency: time.Since(start)}
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(raw, &a.Order)
		return a
	}
	var p httpapi.Problem
	if err := json.Unmarshal(raw, &p); err != nil || resp.Header.Get("Content-Type") != "application/problem+json" {
		a.Code = "not-a-problem: " + string(raw)
	} else {
		a.Code, a.OrderID = p.Code, p.OrderID
	}
	return a
}

// Buy is POST /v1/tickets/{id}/purchase on pod 0.
func (s *Sale) Buy(ticket int64, buyer string) Answer {
	return s.BuyOn(0, ticket, buyer, "")
}

// BuyOn buys on pod, with an Idempotency-Key unless key is empty.
func (s *Sale) BuyOn(pod int, ticket int64, buyer, key string) Answer {
	h := map[string]string{"Content-Type": "application/json"}
	if key != "" {
		h["Idempotency-Key"] = key
	}
	return s.Post(pod, fmt.Sprintf("/v1/tickets/%d/purchase", ticket), fmt.Sprintf(`{"buyerId":%q}`, buyer), h)
}

// GetJSON GETs path on pod 0, decodes the body into v (when not nil) and
// returns the status.
func (s *Sale) GetJSON(path string, v any) int {
	resp, err := s.Client.Get(s.Pods[0].URL + path)
	if err != nil {
		s.T.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}
