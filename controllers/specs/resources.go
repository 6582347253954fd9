package specs

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Default requests, so every pod is scheduled with what it needs (not
// BestEffort, first to be evicted) and an HPA has CPU requests to compute
// utilisation from. A FlashSale's resources override them key by key.
var (
	purchaseDefaults = requests("100m", "64Mi")
	redisDefaults    = requests("50m", "64Mi")
	postgresDefaults = requests("100m", "256Mi")
)

// defaultRedisMemoryLimit caps a managed Redis without a memory limit of its
// own. Locks and sold markers of ten million seats take about 1.2 GB; the
// sales this default suits (up to a million seats) under 150 MB.
var defaultRedisMemoryLimit = resource.MustParse("256Mi")

// redisMaxMemoryPercent of the container's memory limit is Redis's
// --maxmemory: the rest is headroom for Redis's own overhead (client
// buffers, fragmentation), so Redis refuses writes (noeviction) before the
// kernel kills it.
const redisMaxMemoryPercent = 75

func requests(cpu, memory string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory),
	}}
}

// withDefaults is r with the default requests it does not set. A default
// request above a limit r sets is left out (the API server would refuse it).
func withDefaults(r *corev1.ResourceRequirements, defaults corev1.ResourceRequirements) corev1.ResourceRequirements {
	out := corev1.ResourceRequirements{}
	if r != nil {
		out = *r.DeepCopy()
	}
	for name, q := range defaults.Requests {
		if _, set := out.Requests[name]; set {
			continue
		}
		if limit, ok := out.Limits[name]; ok && limit.Cmp(q) < 0 {
			continue
		}
		if out.Requests == nil {
			out.Requests = corev1.ResourceList{}
		}
		out.Requests[name] = q
	}
	return out
}

// redisResources are the managed Redis's resources with the defaults and
// always a memory limit; maxmemory is the matching --maxmemory in bytes.
func redisResources(r *corev1.ResourceRequirements) (res corev1.ResourceRequirements, maxmemory int64) {
	res = withDefaults(r, redisDefaults)
	limit, ok := res.Limits[corev1.ResourceMemory]
	if !ok {
		limit = defaultRedisMemoryLimit
		if req := res.Requests[corev1.ResourceMemory]; req.Cmp(limit) > 0 {
			limit = req
		}
		if res.Limits == nil {
			res.Limits = corev1.ResourceList{}
		}
		res.Limits[corev1.ResourceMemory] = limit
	}
	return res, limit.Value() * redisMaxMemoryPercent / 100
}

// tcpLiveness checks every 10 s that the named port accepts connections,
// failing after failures misses in a row. It needs no credentials, so it
// keeps working whatever authentication the server requires.
func tcpLiveness(port string, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString(port)}},
		PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: failures,
	}
}
