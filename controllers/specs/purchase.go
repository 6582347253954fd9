package specs

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// ConfigHashAnnotation on the purchase pods is a hash of the container they
// run: a change that needs new pods (image, resources) gives a new hash and
// rolls them, one at a time, and anyone can tell which pods run the current
// configuration. The settings the pods follow live are not in it.
const ConfigHashAnnotation = "fluxorder.io/config-hash"

const (
	purchaseUID     = 65532 // nonroot of distroless
	defaultReplicas = 2
)

// PurchaseEnv is the purchase pods' configuration, as the FLUX_ORDER_*
// variables `flux-order purchase` reads: only what cannot change during a
// sale. Tickets, the window, paused, maxTicketsPerBuyer and lockTTL are
// deliberately absent: the pods read them from their FlashSale at start and
// follow it live (purchase/statusreport), so changing one never changes the
// pod template and never rolls the pods in the middle of a sale.
func PurchaseEnv(s *salesv1alpha1.FlashSale) []corev1.EnvVar {
	env := []corev1.EnvVar{{Name: "FLUX_ORDER_SALE", Value: s.Name}}
	env = append(env, redisEnv(s)...)
	env = append(env,
		databaseURLEnv(s),
		secretEnv("FLUX_ORDER_SALE_SECRET", secretRef(SaleSecretName(s), SecretKeySaleSecret)),
		// The admin API's token (order cancellation on the private port):
		// the operator adds it to the sale's Secret, old ones included,
		// before the pods are applied.
		secretEnv("FLUX_ORDER_ADMIN_TOKEN", secretRef(SaleSecretName(s), SecretKeyAdminToken)),
	)
	if schema := DatabaseSchema(s); schema != "" {
		env = append(env, corev1.EnvVar{Name: "FLUX_ORDER_DATABASE_SCHEMA", Value: schema})
	}
	if s.Spec.BuyerAuth != nil {
		// Only where the keys are: the issuer and audiences are live
		// settings the pods follow from the FlashSale.
		env = append(env, corev1.EnvVar{Name: "FLUX_ORDER_BUYER_JWKS_FILE", Value: BuyerJWKSFile})
	}
	return append(env,
		corev1.EnvVar{Name: "FLUX_ORDER_LISTEN", Value: ":" + strconv.Itoa(PurchasePort)},
		corev1.EnvVar{Name: "FLUX_ORDER_METRICS_LISTEN", Value: ":" + strconv.Itoa(MetricsPort)},
		// Report the counts into this FlashSale and follow its settings.
		corev1.EnvVar{Name: "FLUX_ORDER_REPORT_STATUS", Value: "true"},
		fieldEnv("FLUX_ORDER_NAMESPACE", "metadata.namespace"),
		fieldEnv("FLUX_ORDER_POD_NAME", "metadata.name"),
		// Delivery follows this file (docs/delivery.md).
		corev1.EnvVar{Name: "FLUX_ORDER_WEBHOOKS_FILE", Value: WebhooksFile},
	)
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func secretEnv(name string, ref corev1.SecretKeySelector) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &ref}}
}

func secretRef(name, key string) corev1.SecretKeySelector {
	return corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

// redisEnv points the pods at their Redis. Credentials only ever come from
// a Secret: the managed Redis' generated URL, or the external one's.
func redisEnv(s *salesv1alpha1.FlashSale) []corev1.EnvVar {
	ext := s.Spec.Redis.External
	switch {
	case ext == nil:
		// The URL's Secret moves with spec.redis.tls; the scheme pins it to
		// this template (purchase.Config.RedisScheme).
		scheme := "redis"
		if s.Spec.Redis.TLS {
			scheme = "rediss"
		}
		env := []corev1.EnvVar{secretEnv("FLUX_ORDER_REDIS_URL", secretRef(RedisName(s), SecretKeyURL)),
			{Name: "FLUX_ORDER_REDIS_SCHEME", Value: scheme}}
		if s.Spec.Redis.TLS {
			env = append(env, corev1.EnvVar{Name: "FLUX_ORDER_REDIS_CA_FILE", Value: CAFile})
		}
		return env
	case ext.URLSecretRef != nil:
		env := []corev1.EnvVar{secretEnv("FLUX_ORDER_REDIS_URL", *ext.URLSecretRef)}
		if ext.CASecretRef != nil {
			env = append(env, corev1.EnvVar{Name: "FLUX_ORDER_REDIS_CA_FILE", Value: ExternalRedCAFile})
		}
		return env
	default: // deprecated: a password-less Redis at host:port
		return []corev1.EnvVar{secretEnv("FLUX_ORDER_REDIS_ADDR", *ext.AddressSecretRef)}
	}
}

// DatabaseSchema is the PostgreSQL schema of a sale's tables in an
// external database, which several sales may share: the sale's name and a
// hash of its namespace and name (sales of the same name in two
// namespaces stay apart), within PostgreSQL's 63-byte identifiers. A
// managed database belongs to one sale and keeps its default schema.
func DatabaseSchema(s *salesv1alpha1.FlashSale) string {
	if s.Spec.Postgres.External == nil {
		return ""
	}
	sum := sha256.Sum256([]byte(s.Namespace + "/" + s.Name))
	return "fo_" + strings.ReplaceAll(s.Name, "-", "_") + "_" + hex.EncodeToString(sum[:4])
}

func databaseURLEnv(s *salesv1alpha1.FlashSale) corev1.EnvVar {
	if ext := s.Spec.Postgres.External; ext != nil {
		return secretEnv("FLUX_ORDER_DATABASE_URL", ext.URLSecretRef)
	}
	return secretEnv("FLUX_ORDER_DATABASE_URL", secretRef(PostgresName(s), SecretKeyURL))
}

// purchaseVolumes give the pods the CA certificates they verify their
// datastores with, and the resolved webhooks (<s>-webhooks), and nothing
// else: ca.crt of the sale's CA (never its key, never the servers' keys),
// and the external datastores' CA bundles.
func purchaseVolumes(s *salesv1alpha1.FlashSale) ([]corev1.Volume, []corev1.VolumeMount) {
	hooks, hooksMount := webhooksVolume(s)
	vols := []corev1.Volume{hooks}
	mounts := []corev1.VolumeMount{hooksMount}
	if NeedsTLS(s) {
		vols = append(vols, secretVolume("ca", TLSSecretName(s), 0o444, SecretKeyCACert))
		mounts = append(mounts, corev1.VolumeMount{Name: "ca", MountPath: TLSDir, ReadOnly: true})
	}
	var sources []corev1.VolumeProjection
	project := func(ref *corev1.SecretKeySelector, file string) {
		if ref != nil {
			sources = append(sources, corev1.VolumeProjection{Secret: &corev1.SecretProjection{
				LocalObjectReference: ref.LocalObjectReference,
				Items:                []corev1.KeyToPath{{Key: ref.Key, Path: file}},
			}})
		}
	}
	if ext := s.Spec.Postgres.External; ext != nil {
		project(ext.CASecretRef, "postgres-ca.crt")
	}
	if ext := s.Spec.Redis.External; ext != nil {
		project(ext.CASecretRef, "redis-ca.crt")
	}
	if a := s.Spec.BuyerAuth; a != nil {
		// The buyers' JWKS, as a whole Secret volume with one item: the
		// kubelet refreshes it in place when the Secret changes (a subPath
		// mount never would), and the pods re-read it (docs/architecture.md).
		ref := a.JWT.JWKSSecretRef
		vols = append(vols, corev1.Volume{Name: "buyer-jwks", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: ref.Name, Items: []corev1.KeyToPath{{Key: ref.Key, Path: buyerJWKSName}},
			DefaultMode: ptr.To[int32](0o444), Optional: ptr.To(false),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "buyer-jwks", MountPath: BuyerAuthDir, ReadOnly: true})
	}
	if len(sources) > 0 {
		vols = append(vols, corev1.Volume{Name: "external-ca", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{Sources: sources, DefaultMode: ptr.To[int32](0o444)}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "external-ca", MountPath: ExternalDir, ReadOnly: true})
	}
	return vols, mounts
}

// PurchaseReplicas is what the Deployment asks for; nil when an HPA
// decides (so the operator does not fight it).
func PurchaseReplicas(s *salesv1alpha1.FlashSale) *int32 {
	if s.Spec.PurchaseAPI.Autoscaling != nil {
		return nil
	}
	if r := s.Spec.PurchaseAPI.Replicas; r != nil {
		return ptr.To(*r)
	}
	return ptr.To[int32](defaultReplicas)
}

// PurchaseDeployment runs the purchase API pods.
func PurchaseDeployment(s *salesv1alpha1.FlashSale, o Options) *appsv1.Deployment {
	api := s.Spec.PurchaseAPI
	volumes, mounts := purchaseVolumes(s)
	container := corev1.Container{
		Name:            "purchase",
		Image:           firstOf(api.Image, o.PurchaseImage),
		ImagePullPolicy: api.ImagePullPolicy,
		Args:            []string{"purchase"},
		Env:             PurchaseEnv(s),
		Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: PurchasePort}, {Name: "metrics", ContainerPort: MetricsPort}},
		VolumeMounts:    mounts,
		Resources:       withDefaults(&api.Resources, purchaseDefaults),
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("http")}},
			PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 2,
		},
		// The pod serves only after waiting for Postgres, migrating and
		// seeding (a million seats take seconds): liveness waits for that.
		StartupProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 2, TimeoutSeconds: 2, FailureThreshold: 150,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
			PeriodSeconds: 10, TimeoutSeconds: 2, FailureThreshold: 3,
		},
		// Keep serving while the endpoint removal propagates to the
		// Service and the Ingress, then drain in-flight purchases.
		Lifecycle:       &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 3}}},
		SecurityContext: restricted(true),
	}
	labels := SelectorLabels(s, ComponentPurchase)
	template := corev1.PodTemplateSpec{
		ObjectMeta: podMeta(s, ComponentPurchase),
		Spec: corev1.PodSpec{
			ServiceAccountName:            PurchaseName(s),
			SecurityContext:               podSecurity(purchaseUID),
			Containers:                    []corev1.Container{container},
			Volumes:                       volumes,
			TerminationGracePeriodSeconds: ptr.To[int64](30),
		},
	}
	template.Annotations = map[string]string{ConfigHashAnnotation: hashOf(container)}
	return &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: objectMeta(s, PurchaseName(s), ComponentPurchase),
		Spec: appsv1.DeploymentSpec{
			Replicas: PurchaseReplicas(s),
			Selector: selector(labels),
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				// Never lose serving capacity in the middle of a sale.
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: template,
		},
	}
}

func hashOf(v any) string {
	b, _ := json.Marshal(v) // plain structs: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// PurchaseService is the purchase API's address inside the cluster, and
// the Ingress's backend (port "http" only). Metrics have their own port,
// which the Ingress never routes and the NetworkPolicy opens only to the
// monitoring namespaces.
func PurchaseService(s *salesv1alpha1.FlashSale) *corev1.Service {
	svc := service(s, PurchaseName(s), ComponentPurchase, "http", PurchasePort)
	svc.Spec.Ports[0].Port = 80
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
		Name: "metrics", Port: MetricsPort, TargetPort: intstr.FromString("metrics"), Protocol: corev1.ProtocolTCP,
	})
	return svc
}
