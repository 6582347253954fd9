//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Scenario: a sale is closed to everyone but its own. From a pod in
// another namespace, the sale's Redis refuses an unauthenticated write of a
// sold marker (the reported attack) and, with the purchase pods' own
// credentials, FLUSHALL and CONFIG SET; the database's app role is not a
// superuser and its connection is TLS; /metrics is not served through the
// Ingress; buying still works.
func TestSaleIsClosedToEveryoneButItsOwn(t *testing.T) {
	t.Parallel()
	ns := testNamespace(t, "e2e-sec")
	const name = "closed"
	b := startSale(t, ns, name, 20, 1)

	// A stranger: a pod in a namespace of its own, with redis-cli. It
	// stays up and every attempt is a `kubectl exec`, whose output is
	// reliable (a `kubectl run --rm -i` can lose a short-lived pod's output).
	// restartPolicy Always: on a loaded node runc can fail to start a
	// container ("unable to freeze"); the kubelet then starts it again,
	// where a Never pod would stay in StartError (CI saw it once).
	other := testNamespace(t, "e2e-stranger")
	redisHost := name + "-redis." + ns + ".svc"
	mustKubectl(t, nil, "-n", other, "run", "stranger", "--image=redis:7", "--image-pull-policy=IfNotPresent",
		"--restart=Always", "--command", "--", "sleep", "3600")
	mustKubectl(t, nil, "-n", other, "wait", "--for=condition=Ready", "pod/stranger", "--timeout=2m")
	stranger := func(args ...string) string {
		t.Helper()
		all := append([]string{"-n", other, "exec", "stranger", "--"}, args...)
		out, err := kubectl(t.Context(), nil, all...)
		if err != nil && !strings.Contains(out, "NOAUTH") && !strings.Contains(out, "NOPERM") {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(all, " "), err, out)
		}
		return strings.TrimSpace(out)
	}

	out := stranger("redis-cli", "-h", redisHost, "SET", "fs:"+name+":ticket:2", "sold:x")
	if !strings.Contains(out, "NOAUTH") {
		t.Errorf("an unauthenticated SET from another namespace: expected NOAUTH, got %q", out)
	}

	sec := &corev1.Secret{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-redis"}, sec); err != nil {
		t.Fatal(err)
	}
	pass := string(sec.Data["password"])
	for _, cmd := range [][]string{{"FLUSHALL"}, {"CONFIG", "SET", "maxmemory", "1"}, {"REPLICAOF", "127.0.0.1", "1"}} {
		args := append([]string{"redis-cli", "-h", redisHost, "--user", "purchase", "--pass", pass, "--no-auth-warning"}, cmd...)
		if out := stranger(args...); !strings.Contains(out, "NOPERM") {
			t.Errorf("%s with the app credentials: expected NOPERM, got %q", strings.Join(cmd, " "), out)
		}
	}

	// Seat 2 was not marked sold by the stranger: it sells.
	code, body, err := b.post(t.Context(), "/v1/tickets/2/purchase", `{"buyerId":"alice"}`)
	if err != nil || code != http.StatusCreated {
		t.Fatalf("buying seat 2 after the attempts: expected 201, got %d %s %v", code, body, err)
	}

	// The app role, over its own TLS connection.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, saleDatabaseURL(t, ns, name))
	if err != nil {
		t.Fatalf("connect as the app role: %v", err)
	}
	defer conn.Close(context.Background())
	var super, createRole, createDB, ssl bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user`).Scan(&super, &createRole, &createDB); err != nil {
		t.Fatal(err)
	}
	if super || createRole || createDB {
		t.Errorf("the app role: superuser %v, createrole %v, createdb %v; want none", super, createRole, createDB)
	}
	if err := conn.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Errorf("the app role's connection: ssl %v (%v), want true", ssl, err)
	}
	// And the purchase pods' own connections are TLS too.
	var plain int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
		WHERE a.usename = current_user AND NOT s.ssl`).Scan(&plain); err != nil || plain != 0 {
		t.Errorf("%d connections of the app role without TLS (%v)", plain, err)
	}
	// The superuser cannot log in over the network even with its password.
	admin := &corev1.Secret{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name + "-postgres-admin"}, admin); err != nil {
		t.Fatal(err)
	}
	superURL, err := url.Parse(saleDatabaseURL(t, ns, name))
	if err != nil {
		t.Fatal(err)
	}
	superURL.User = url.UserPassword("postgres", string(admin.Data["password"]))
	if c, err := pgx.Connect(ctx, superURL.String()); err == nil {
		c.Close(context.Background())
		t.Error("the superuser logged in over the network")
	}

	// Metrics are not for buyers.
	code, body, err = b.do(t.Context(), http.MethodGet, "/metrics", "")
	if err != nil || code != http.StatusNotFound {
		t.Errorf("GET /metrics through the Ingress: expected 404, got %d %.200s %v", code, body, err)
	}
}
