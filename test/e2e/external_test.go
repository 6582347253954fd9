//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// externalStores runs a plain Redis and a plain PostgreSQL (Deployments
// with no volume) in a namespace of their own, as a platform team's shared
// datastores would be, and returns their in-cluster addresses.
func externalStores(t *testing.T) (redisAddr, postgresURL string) {
	t.Helper()
	ns := testNamespace(t, "e2e-stores")
	manifest := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
      - name: redis
        image: %[2]s
        args: ["redis-server", "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"]
        ports: [{containerPort: 6379}]
        readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: redis, namespace: %[1]s}
spec: {selector: {app: redis}, ports: [{port: 6379}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
      - name: postgres
        image: %[3]s
        env: [{name: POSTGRES_USER, value: shop}, {name: POSTGRES_PASSWORD, value: shop-secret}, {name: POSTGRES_DB, value: shared}]
        ports: [{containerPort: 5432}]
        readinessProbe: {exec: {command: ["pg_isready", "-h", "127.0.0.1", "-U", "shop", "-d", "shared"]}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: postgres, namespace: %[1]s}
spec: {selector: {app: postgres}, ports: [{port: 5432}]}
`, ns, env("REDIS_IMG", "redis:7"), env("POSTGRES_IMG", "postgres:15"))
	mustKubectl(t, []byte(manifest), "apply", "-f", "-")
	mustKubectl(t, nil, "-n", ns, "rollout", "status", "deployment/redis", "deployment/postgres", "--timeout=3m")
	return "redis." + ns + ".svc:6379", "postgres://shop:shop-secret@postgres." + ns + ".svc:5432/shared?sslmode=disable"
}

// applyExternalSale applies a sale served by the external stores, whose
// addresses it puts in a Secret of the sale's namespace, and waits until it
// is OnSale and routed.
func applyExternalSale(t *testing.T, ns, name, redisAddr, postgresURL string, managedRedis bool) *buyer {
	t.Helper()
	host := saleHost(ns, name)
	redis := "redis: {external: {addressSecretRef: {name: " + name + "-stores, key: redis}}}"
	if managedRedis {
		redis = ""
	}
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: %[1]s-stores, namespace: %[2]s}
stringData: {redis: %[3]q, postgres: %[4]q}
---
apiVersion: sales.fluxorder.io/v1alpha1
kind: FlashSale
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  tickets: 20
  purchaseAPI: {replicas: 1, resources: {requests: {cpu: 10m}}}
  ingress: {host: %[5]s}
  postgres: {external: {urlSecretRef: {name: %[1]s-stores, key: postgres}}}
  %[6]s
`, name, ns, redisAddr, postgresURL, host, redis)
	mustKubectl(t, []byte(manifest), "apply", "-f", "-")
	b := newBuyer(host)
	waitSale(t, ns, name, 5*time.Minute, "OnSale on external stores", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhaseOnSale && s.Status.ReadyReplicas == 1
	})
	b.waitRoute(t, time.Minute)
	return b
}

// Two sales share one external PostgreSQL (each in its own schema) and one
// external Redis (each under its own key prefix): each sells its seat 1
// exactly once, and neither sees the other's inventory.
func TestTwoSalesOnSharedExternalStores_EachSellsItsSeatOnce(t *testing.T) {
	t.Parallel()
	redisAddr, postgresURL := externalStores(t)
	ns := testNamespace(t, "e2e-external")
	first, second := func() (*buyer, *buyer) {
		provisioning <- struct{}{}
		defer func() { <-provisioning }()
		// The first sale uses both external stores; the second only the
		// shared PostgreSQL, with a Redis of its own.
		return applyExternalSale(t, ns, "first", redisAddr, postgresURL, false),
			applyExternalSale(t, ns, "second", redisAddr, postgresURL, true)
	}()
	for name, b := range map[string]*buyer{"first": first, "second": second} {
		if code, body, err := b.post(t.Context(), "/v1/tickets/1/purchase", `{"buyerId":"alice"}`); err != nil || code != http.StatusCreated {
			t.Fatalf("sale %s, seat 1: expected 201, got %d %s %v", name, code, body, err)
		}
		b.expectSold(t, 1, "bob")
		av, err := b.availability(t.Context())
		if err != nil || av.Tickets != 20 || av.Sold != 1 {
			t.Fatalf("sale %s: expected 20 seats, 1 sold (inventories must not mix), got %+v %v", name, av, err)
		}
	}
}
