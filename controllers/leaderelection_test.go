package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/flux-order/flux-order/internal/testservers"
)

// The leader-election Role (config/rbac, and the chart's copy, checked by
// test/chart) is enough for a manager to win the election and to step
// down on stop, as cmd/manager.go configures it: client-go's Lease lock
// gets, creates and updates its Lease, nothing more.
func TestLeaderElection_WithItsRoleOnly(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	role := &rbacv1.Role{}
	raw, err := os.ReadFile(filepath.Join("..", "config", "rbac", "leader_election_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, role); err != nil {
		t.Fatal(err)
	}
	role.ObjectMeta = metav1.ObjectMeta{Name: role.Name, Namespace: ns}
	user := "leader-" + ns
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
	if err := k8s.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	u, err := testEnv.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	const id = "flux-order-manager.fluxorder.io"
	mgr, err := ctrl.NewManager(u.Config(), ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		LeaderElection: true, LeaderElectionID: id, LeaderElectionNamespace: ns, LeaderElectionReleaseOnCancel: true})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	select {
	case <-mgr.Elected():
	case err := <-done:
		t.Fatalf("the manager stopped before it was elected: %v", err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("not elected within 20 s with the leader-election Role")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("the manager's stop: %v", err)
	}
	// Stepping down (ReleaseOnCancel) empties the Lease's holder.
	lease := &coordinationv1.Lease{}
	testservers.Eventually(t, 5*time.Second, poll, "the Lease released", func() error {
		if err := get(t, ns, id, lease); err != nil {
			return err
		}
		if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
			return fmt.Errorf("still held by %s", *h)
		}
		return nil
	})
}
