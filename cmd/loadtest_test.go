package cmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/orderstore"
)

func TestLoadtestCommand_BadValues_OneLineErrorNamingTheFlag(t *testing.T) {
	url := []string{"loadtest", "--url", "http://127.0.0.1:1"}
	bounded := with(url, "--requests", "10")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		flag string
	}{
		{"missing url", nil, []string{"loadtest", "--requests", "10"}, "--url"},
		{"url without scheme", nil, []string{"loadtest", "--url", "localhost:8080", "--requests", "10"}, "--url"},
		{"no bound", nil, url, "--duration"},
		{"unknown scenario", nil, with(bounded, "--scenario", "storm"), "--scenario"},
		{"unknown scenario from env", map[string]string{"FLUX_ORDER_SCENARIO": "storm"}, bounded, "--scenario"},
		{"until sold out on a hot seat", nil, with(bounded, "--until-sold-out"), "--until-sold-out"},
		{"rate not a number", nil, with(bounded, "--rate", "fast"), "--rate"},
		{"negative rate", nil, with(bounded, "--rate=-1"), "--rate"},
		{"concurrency not a number from env", map[string]string{"FLUX_ORDER_CONCURRENCY": "many"}, bounded, "--concurrency"},
		{"negative concurrency", nil, with(bounded, "--concurrency=-4"), "--concurrency"},
		{"seat zero", nil, with(bounded, "--seat", "0"), "--seat"},
		{"no buyers", nil, with(bounded, "--buyers", "0"), "--buyers"},
		{"duration without a unit", nil, with(url, "--duration", "10"), "--duration"},
		{"zero timeout", nil, with(bounded, "--timeout", "0s"), "--timeout"},
		{"host with a space", nil, with(bounded, "--host", "a b"), "--host"},
		{"audit url of another database", nil, with(bounded, "--audit-database-url", "mysql://u:p@h/db"), "--audit-database-url"},
		{"a jwt key that is not there", nil, with(bounded, "--jwt-key", "/nonexistent.jwk", "--jwt-issuer", "i", "--jwt-audience", "a"), "--jwt-key"},
		{"a jwt key without an issuer", nil, with(bounded, "--jwt-key", "/nonexistent.jwk", "--jwt-audience", "a"), "--jwt-issuer"},
		{"a jwt key without an audience", nil, with(bounded, "--jwt-key", "/nonexistent.jwk", "--jwt-issuer", "i"), "--jwt-audience"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := run(t, c.env, c.args...)
			if err == nil {
				t.Fatal("expected an error, got none")
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, c.flag) {
				t.Fatalf("expected one line naming %s, got %q", c.flag, msg)
			}
		})
	}
}

// with returns base and extra in a new slice, so cases never share one.
func with(base []string, extra ...string) []string {
	return append(append([]string(nil), base...), extra...)
}

// fakeSale answers 201 for ticket 1 (the first time) and 409 ticket_sold
// otherwise, with availability reporting one seat sold.
func fakeSale(t *testing.T) *httptest.Server {
	var sold atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/availability" {
			fmt.Fprint(w, `{"tickets":10,"sold":1,"available":9}`)
			return
		}
		if sold.CompareAndSwap(false, true) {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"orderId":"0190c7b0-0000-7000-8000-000000000001","ticketId":1,"buyerId":"buyer-1"}`)
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		fmt.Fprint(w, `{"status":409,"code":"ticket_sold"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestLoadtestCommand_JSON_PrintsOneObjectOnStdout(t *testing.T) {
	srv := fakeSale(t)
	t.Setenv("FLUX_ORDER_URL", srv.URL) // every flag is also an environment variable
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs([]string{"loadtest", "--requests", "50", "--concurrency", "2", "--json"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("expected success, got %v (stderr %q)", err, errOut.String())
	}
	var s struct {
		Requests int64
		Outcomes map[string]struct{ Count int64 }
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || strings.Count(strings.TrimSpace(out.String()), "\n") != 0 {
		t.Fatalf("expected one JSON object on one line, got %v in %q", err, out.String())
	}
	if s.Requests != 50 || s.Outcomes["201"].Count != 1 || s.Outcomes["409_ticket_sold"].Count != 49 {
		t.Fatalf("expected 50 requests: 1 201 and 49 ticket_sold, got %+v", s)
	}
}

func TestLoadtestCommand_Text_PrintsATable(t *testing.T) {
	srv := fakeSale(t)
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"loadtest", "--url", srv.URL, "--requests", "20"})
	if err := root.ExecuteContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hot-seat on " + srv.URL, "requests    20 in", "client CPU", "409 ticket_sold", "201 created", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("expected the summary to contain %q, got:\n%s", want, out.String())
		}
	}
}

func TestLoadtestCommand_FailedAudit_IsAnError(t *testing.T) {
	pg, err := testservers.StartPostgres()
	if err != nil {
		t.Fatalf("real PostgreSQL needed: %v", err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	dbURL, err := pg.CreateDatabase(t.Context(), "audit")
	if err != nil {
		t.Fatal(err)
	}
	store, err := orderstore.Open(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := store.Seed(t.Context(), 10); err != nil {
		t.Fatal(err)
	}
	// The fake sale answers 201 for an order this database never saw.
	srv := fakeSale(t)
	root := newRootCommand()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&bytes.Buffer{})
	root.SetArgs([]string{"loadtest", "--url", srv.URL, "--requests", "20", "--audit-database-url", dbURL})
	err = root.ExecuteContext(t.Context())
	if err == nil || !strings.HasPrefix(err.Error(), "audit failed: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("expected one line starting with \"audit failed: \", got %v", err)
	}
	if !strings.Contains(out.String(), "audit       FAIL") || !strings.Contains(out.String(), "0190c7b0-0000-7000-8000-000000000001 (ticket 1) does not exist") {
		t.Fatalf("expected the summary to show the failed audit and the missing order, got:\n%s", out.String())
	}
}
