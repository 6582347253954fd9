package loadtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"time"

	"github.com/google/uuid"
)

// Availability is GET /v1/availability.
type Availability struct {
	Tickets   int64 `json:"tickets"`
	Sold      int64 `json:"sold"`
	Held      int64 `json:"held"`
	Available int64 `json:"available"`
}

// apiClient makes the few calls outside the hot loop with net/http.
type apiClient struct {
	t target
	c *http.Client
}

func newAPIClient(t target, tlsCfg *tls.Config, timeout time.Duration) *apiClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the target is addressed directly, like the load itself
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = &tls.Config{}
	}
	if tr.TLSClientConfig.ServerName == "" {
		tr.TLSClientConfig.ServerName = t.serverName()
	}
	return &apiClient{t: t, c: &http.Client{Transport: tr, Timeout: timeout}}
}

func (a *apiClient) availability(ctx context.Context) (Availability, error) {
	url := a.t.base + "/v1/availability"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Availability{}, err
	}
	req.Host = a.t.host
	resp, err := a.c.Do(req)
	if uerr := (*neturl.Error)(nil); errors.As(err, &uerr) {
		err = uerr.Err // it would repeat the method and URL
	}
	if err != nil {
		return Availability{}, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Availability{}, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		detail := resp.Status
		if code := problemCode(body); code != nil {
			detail += " " + string(code)
		}
		return Availability{}, fmt.Errorf("GET %s: %s", url, detail)
	}
	var av Availability
	if err := json.Unmarshal(body, &av); err != nil {
		return Availability{}, fmt.Errorf("GET %s: not an availability answer: %w", url, err)
	}
	return av, nil
}

// FetchAvailability asks the sale of cfg for its counts (for the audit).
func FetchAvailability(ctx context.Context, cfg Config) (Availability, error) {
	t, err := parseTarget(cfg.URL, cfg.Host)
	if err != nil {
		return Availability{}, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return newAPIClient(t, cfg.TLS, timeout).availability(ctx)
}

// order asks GET /v1/orders/{id}: the order when it exists (200), and the
// status.
func (a *apiClient) order(ctx context.Context, id uuid.UUID, token string) (Order, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.t.base+"/v1/orders/"+id.String(), nil)
	if err != nil {
		return Order{}, 0, err
	}
	req.Host = a.t.host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return Order{}, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Order{}, 0, err
	}
	var o Order
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &o); err != nil {
			return Order{}, 0, err
		}
	}
	return o, resp.StatusCode, nil
}
