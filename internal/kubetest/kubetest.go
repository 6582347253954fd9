// Package kubetest holds what tests against a real API server (envtest)
// share: playing the parts of a cluster that envtest does not run.
package kubetest

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flux-order/flux-order/internal/testservers"
)

// MarkReady plays the kubelet and the controller-manager: the Deployment or
// StatefulSet namespace/name (obj's kind), once it exists, reports all its
// pods ready.
func MarkReady(t testing.TB, k8s client.Client, namespace, name string, obj client.Object) {
	t.Helper()
	testservers.Eventually(t, 30*time.Second, 50*time.Millisecond, "mark "+name+" ready", func() error {
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, obj); err != nil {
			return err
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r := ptr.Deref(o.Spec.Replicas, 1)
			o.Status = appsv1.DeploymentStatus{ObservedGeneration: o.Generation, Replicas: r, ReadyReplicas: r, AvailableReplicas: r, UpdatedReplicas: r}
		case *appsv1.StatefulSet:
			o.Status = appsv1.StatefulSetStatus{ObservedGeneration: o.Generation, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1}
		}
		return k8s.Status().Update(context.Background(), obj)
	})
}
