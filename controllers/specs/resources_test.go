package specs

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

func qty(r corev1.ResourceList, name corev1.ResourceName) string {
	q, ok := r[name]
	if !ok {
		return "-"
	}
	return q.String()
}

func TestResources_EveryWorkloadHasRequests_RedisAMemoryLimitAndMatchingMaxmemory(t *testing.T) {
	gi := resource.MustParse("1Gi")
	cases := []struct {
		name                     string
		got                      corev1.ResourceRequirements
		cpu, memory, memoryLimit string
	}{
		{"purchase defaults", PurchaseDeployment(sale(), opts).Spec.Template.Spec.Containers[0].Resources, "100m", "64Mi", "-"},
		{"purchase keeps its own cpu", PurchaseDeployment(sale(func(s *salesv1alpha1.FlashSale) {
			s.Spec.PurchaseAPI.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}}
		}), opts).Spec.Template.Spec.Containers[0].Resources, "2", "64Mi", "-"},
		{"redis defaults", RedisDeployment(sale(), opts).Spec.Template.Spec.Containers[0].Resources, "50m", "64Mi", "256Mi"},
		{"redis with its own limit", RedisDeployment(sale(func(s *salesv1alpha1.FlashSale) {
			s.Spec.Redis.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: gi}}
		}), opts).Spec.Template.Spec.Containers[0].Resources, "50m", "64Mi", "1Gi"},
		{"postgres defaults", PostgresStatefulSet(sale(), opts).Spec.Template.Spec.Containers[0].Resources, "100m", "256Mi", "-"},
		{"a default request above the given limit is left out", withDefaults(&corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")}}, purchaseDefaults), "100m", "-", "32Mi"},
	}
	for _, c := range cases {
		got := [3]string{qty(c.got.Requests, corev1.ResourceCPU), qty(c.got.Requests, corev1.ResourceMemory), qty(c.got.Limits, corev1.ResourceMemory)}
		if want := [3]string{c.cpu, c.memory, c.memoryLimit}; got != want {
			t.Errorf("%s: cpu request, memory request, memory limit = %v, want %v", c.name, got, want)
		}
	}

	_, maxmemory := redisResources(&corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: gi}})
	if maxmemory != gi.Value()*3/4 {
		t.Errorf("--maxmemory %d with a 1Gi limit, want 75%% of it", maxmemory)
	}
	args := RedisDeployment(sale(func(s *salesv1alpha1.FlashSale) {
		s.Spec.Redis.Resources = &corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: gi}}
	}), opts).Spec.Template.Spec.Containers[0].Args
	if n := len(args); args[n-2] != "--maxmemory" || args[n-1] != "805306368" {
		t.Errorf("redis args %q: want --maxmemory 805306368", args)
	}
}

func TestLiveness_RedisAndPostgres_TCPNeedsNoPassword(t *testing.T) {
	redis := RedisDeployment(sale(), opts).Spec.Template.Spec.Containers[0]
	if p := redis.LivenessProbe; p == nil || p.TCPSocket == nil || p.TCPSocket.Port.StrVal != "redis" || p.FailureThreshold != 3 {
		t.Errorf("redis liveness %+v", p)
	}
	pg := PostgresStatefulSet(sale(), opts).Spec.Template.Spec.Containers[0]
	if p := pg.LivenessProbe; p == nil || p.TCPSocket == nil || p.TCPSocket.Port.StrVal != "postgres" || p.PeriodSeconds*p.FailureThreshold < 60 {
		t.Errorf("postgres liveness %+v", p)
	}
	if p := pg.StartupProbe; p == nil || p.TCPSocket == nil || p.PeriodSeconds*p.FailureThreshold < 600 {
		t.Errorf("postgres startup probe must allow a long recovery: %+v", p)
	}
}
