package specs

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

const redisUID = 999 // the redis user of the official image

const redisConfigDir = "/etc/flux-order/redis"

// RedisArgs starts redis-server with the sale's ACL file (the default user
// off: no anonymous access), no persistence (Postgres is the truth, lost
// locks only cost speed) and noeviction, so Redis refuses writes rather
// than silently dropping locks; with spec.redis.tls, TLS only.
func RedisArgs(s *salesv1alpha1.FlashSale) []string {
	args := []string{"redis-server",
		"--aclfile", redisConfigDir + "/" + SecretKeyACL,
		"--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"}
	if s.Spec.Redis.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(RedisPort),
			"--tls-cert-file", TLSDir+"/"+corev1.TLSCertKey,
			"--tls-key-file", TLSDir+"/"+corev1.TLSPrivateKeyKey,
			"--tls-ca-cert-file", TLSDir+"/"+SecretKeyCACert,
			// Clients log in with a password; no client certificates.
			"--tls-auth-clients", "no")
	}
	return args
}

// RedisDeployment runs the sale's lock store, one instance (RedisArgs).
func RedisDeployment(s *salesv1alpha1.FlashSale, o Options) *appsv1.Deployment {
	r := s.Spec.Redis
	if r.External != nil {
		return nil
	}
	container := corev1.Container{
		Name:  "redis",
		Image: firstOf(r.Image, o.RedisImage),
		Args:  RedisArgs(s),
		Ports: []corev1.ContainerPort{{Name: "redis", ContainerPort: RedisPort}},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("redis")}},
			PeriodSeconds: 2,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: "/data"},
			{Name: "acl", MountPath: redisConfigDir, ReadOnly: true},
		},
		SecurityContext: restricted(true),
	}
	volumes := []corev1.Volume{emptyDir("data"), secretVolume("acl", RedisName(s), 0o440, SecretKeyACL)}
	resources, maxmemory := redisResources(r.Resources)
	container.Resources = resources
	container.Args = append(container.Args, "--maxmemory", strconv.FormatInt(maxmemory, 10))
	container.LivenessProbe = tcpLiveness("redis", 3)
	containers := []corev1.Container{container}
	if r.TLS {
		containers[0].VolumeMounts = append(containers[0].VolumeMounts, corev1.VolumeMount{Name: "tls", MountPath: TLSDir, ReadOnly: true})
		volumes = append(volumes, secretVolume("tls", TLSSecretName(s), 0o440))
		// The reloader makes Redis load a renewed certificate without a
		// restart, which would lose every lock (docs/security.md).
		auth := secretEnv("REDISCLI_AUTH", secretRef(RedisName(s), SecretKeyReloaderPass))
		containers = append(containers, reloader(container.Image, RedisReloadExpect, []corev1.EnvVar{auth}, nil, RedisReloadCommand(RedisPort, TLSDir)...))
	}
	labels := SelectorLabels(s, ComponentRedis)
	dep := &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(s, RedisName(s), ComponentRedis),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: selector(labels),
			// Never two Redis at once: each would hold a different set of locks.
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: withDefaultContainer(podMeta(s, ComponentRedis), container.Name),
				Spec: corev1.PodSpec{
					SecurityContext: podSecurity(redisUID),
					Containers:      containers,
					Volumes:         volumes,
				},
			},
		},
	}
	pinTemplate(&dep.ObjectMeta, dep.Spec.Template, DatastoreInputs{Image: r.Image, Resources: r.Resources, TLS: r.TLS})
	return dep
}

// RedisService is the lock store's stable address.
func RedisService(s *salesv1alpha1.FlashSale) *corev1.Service {
	if s.Spec.Redis.External != nil {
		return nil
	}
	return service(s, RedisName(s), ComponentRedis, "redis", RedisPort)
}
