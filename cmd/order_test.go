package cmd

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOrderCancelCommand_SendsTheTokenAndBody_ReportsRefusals(t *testing.T) {
	const id = "01900000-0000-7000-8000-000000000001"
	var got struct {
		path, auth string
		body       map[string]string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		got.path, got.auth = r.URL.Path, r.Header.Get("Authorization")
		_ = json.Unmarshal(raw, &got.body)
		if got.auth != "Bearer the-token" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"code":"admin_auth_invalid","detail":"the admin token is wrong"}`)
			return
		}
		_, _ = io.WriteString(w, `{"orderId":"`+id+`","reason":"chargeback"}`+"\n")
	}))
	defer srv.Close()
	dir := t.TempDir()
	run := func(token string, args ...string) (string, error) {
		file := filepath.Join(dir, "token")
		if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(io.Discard)
		root.SetArgs(append([]string{"order", "cancel", "--url", srv.URL, "--token-file", file}, args...))
		err := root.ExecuteContext(t.Context())
		return out.String(), err
	}
	out, err := run("the-token", "--reason", "chargeback", "--by", "ops@example", id)
	if err != nil || !strings.Contains(out, `"orderId":"`+id+`"`) {
		t.Fatalf("cancel: %q %v", out, err)
	}
	if got.path != "/admin/v1/orders/"+id+"/cancel" || got.body["reason"] != "chargeback" || got.body["cancelledBy"] != "ops@example" {
		t.Fatalf("request %+v", got)
	}
	if _, err := run("wrong", "--reason", "x", "--by", "y", id); err == nil || !strings.Contains(err.Error(), "admin_auth_invalid") {
		t.Fatalf("a refusal must be reported with its code: %v", err)
	}
	if _, err := run("the-token", "--reason", "x", "--by", "y", "42"); err == nil || !strings.Contains(err.Error(), "not an order id") {
		t.Fatalf("a bad id: %v", err)
	}
	if _, err := run("the-token", "--by", "y", id); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("no reason: %v", err)
	}
}
