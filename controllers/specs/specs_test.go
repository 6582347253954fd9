package specs

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

var opts = Options{PurchaseImage: "flux-order:v1", RedisImage: "redis:7", PostgresImage: "postgres:15"}

func sale(mutate ...func(*salesv1alpha1.FlashSale)) *salesv1alpha1.FlashSale {
	s := &salesv1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Name: "gig", Namespace: "sales", UID: "u-1"},
		Spec:       salesv1alpha1.FlashSaleSpec{Tickets: 100},
	}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func env(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func TestOptionalObjects_ExistOnlyWhenAskedFor(t *testing.T) {
	ext := func(s *salesv1alpha1.FlashSale) {
		s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{AddressSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "r"}, Key: "addr"}}
		s.Spec.Postgres.External = &salesv1alpha1.ExternalPostgres{URLSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "p"}, Key: "url"}}
	}
	one := func(s *salesv1alpha1.FlashSale) { s.Spec.PurchaseAPI.Replicas = ptr.To[int32](1) }
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"no HPA without autoscaling", PurchaseHPA(sale()) != nil, false},
		{"HPA with autoscaling", PurchaseHPA(sale(func(s *salesv1alpha1.FlashSale) {
			s.Spec.PurchaseAPI.Autoscaling = &salesv1alpha1.AutoscalingSpec{MinReplicas: 2, MaxReplicas: 4, TargetCPUUtilizationPercentage: 70}
		})) != nil, true},
		{"PDB with the default two replicas", PurchasePDB(sale()) != nil, true},
		{"no PDB with one replica (it would block drains)", PurchasePDB(sale(one)) != nil, false},
		{"no Ingress without spec.ingress", PurchaseIngress(sale()) != nil, false},
		{"managed Redis", RedisDeployment(sale(), opts) != nil && RedisService(sale()) != nil, true},
		{"no Redis when external", RedisDeployment(sale(ext), opts) != nil || RedisService(sale(ext)) != nil, false},
		{"no Postgres when external", PostgresStatefulSet(sale(ext), opts) != nil || PostgresService(sale(ext)) != nil || PostgresSecret(sale(ext), "x") != nil, false},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestPurchaseDeployment_ConfiguresThePods(t *testing.T) {
	start := time.Date(2027, 1, 10, 10, 0, 0, 0, time.UTC)
	s := sale(func(s *salesv1alpha1.FlashSale) {
		s.Spec.StartsAt = &metav1.Time{Time: start}
		s.Spec.LockTTL = &metav1.Duration{Duration: 750 * time.Millisecond}
		s.Spec.MaxTicketsPerBuyer = 4
		s.Spec.PurchaseAPI.ImagePullPolicy = corev1.PullIfNotPresent
	})
	d := PurchaseDeployment(s, opts)
	c := d.Spec.Template.Spec.Containers[0]
	e := env(c)
	for k, want := range map[string]string{
		"FLUX_ORDER_SALE": "gig", "FLUX_ORDER_METRICS_LISTEN": ":9090",
		"FLUX_ORDER_LISTEN": ":8080", "FLUX_ORDER_REPORT_STATUS": "true",
	} {
		if e[k].Value != want {
			t.Errorf("%s = %q, want %q", k, e[k].Value, want)
		}
	}
	// What may change during a sale is read live from the FlashSale, never
	// from the pod template (changing it would roll the pods).
	for _, live := range []string{"FLUX_ORDER_TICKETS", "FLUX_ORDER_LOCK_TTL", "FLUX_ORDER_MAX_PER_BUYER",
		"FLUX_ORDER_STARTS_AT", "FLUX_ORDER_ENDS_AT", "FLUX_ORDER_PAUSED"} {
		if _, ok := e[live]; ok {
			t.Errorf("%s is in the pod template: the pods must follow it live", live)
		}
	}
	if e["FLUX_ORDER_NAMESPACE"].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("namespace must come from the downward API")
	}
	if c.Image != "flux-order:v1" || c.ImagePullPolicy != corev1.PullIfNotPresent || c.Args[0] != "purchase" {
		t.Errorf("container %s %s %v", c.Image, c.ImagePullPolicy, c.Args)
	}
	if sp := c.StartupProbe; sp == nil || sp.HTTPGet.Path != "/healthz" || sp.PeriodSeconds*sp.FailureThreshold < 120 {
		t.Errorf("a slow start (waiting for Postgres, seeding) must not trip liveness: startup probe %+v", sp)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicas %d, rolling update %+v", *d.Spec.Replicas, d.Spec.Strategy.RollingUpdate)
	}
	if d.OwnerReferences[0].UID != "u-1" || !*d.OwnerReferences[0].Controller {
		t.Errorf("owner %+v", d.OwnerReferences)
	}

	// Routine changes leave the template as it is; a new image rolls the pods.
	before := d.Spec.Template
	s.Spec.Tickets, s.Spec.Paused, s.Spec.MaxTicketsPerBuyer = 200, true, 9
	s.Spec.EndsAt = &metav1.Time{Time: start.Add(time.Hour)}
	s.Spec.LockTTL = &metav1.Duration{Duration: 2 * time.Second}
	if after := PurchaseDeployment(s, opts).Spec.Template; !equality.Semantic.DeepEqual(before, after) {
		t.Errorf("a routine change altered the pod template:\n%+v\n%+v", before, after)
	}
	h1 := before.Annotations[ConfigHashAnnotation]
	s.Spec.PurchaseAPI.Image = "flux-order:v2"
	if h2 := PurchaseDeployment(s, opts).Spec.Template.Annotations[ConfigHashAnnotation]; h1 == h2 || h1 == "" {
		t.Errorf("config hash did not change with the image: %q -> %q", h1, h2)
	}
	// With an HPA the Deployment leaves replicas alone.
	s.Spec.PurchaseAPI.Autoscaling = &salesv1alpha1.AutoscalingSpec{MinReplicas: 1, MaxReplicas: 3}
	if r := PurchaseDeployment(s, opts).Spec.Replicas; r != nil {
		t.Errorf("replicas %d with autoscaling, want unset", *r)
	}
}

func TestExternalDependencies_ComeFromSecrets(t *testing.T) {
	s := sale(func(s *salesv1alpha1.FlashSale) {
		s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{AddressSecretRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "redis-conn"}, Key: "addr"}}
		s.Spec.Postgres.External = &salesv1alpha1.ExternalPostgres{URLSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "pg-conn"}, Key: "dsn"}}
	})
	e := env(PurchaseDeployment(s, opts).Spec.Template.Spec.Containers[0])
	if r := e["FLUX_ORDER_REDIS_ADDR"].ValueFrom.SecretKeyRef; r.Name != "redis-conn" || r.Key != "addr" {
		t.Errorf("redis addr from %+v", r)
	}
	if r := e["FLUX_ORDER_DATABASE_URL"].ValueFrom.SecretKeyRef; r.Name != "pg-conn" || r.Key != "dsn" {
		t.Errorf("database url from %+v", r)
	}
	// Sales sharing an external database each get their own schema.
	other := s.DeepCopy()
	other.Namespace = "elsewhere"
	schema := e["FLUX_ORDER_DATABASE_SCHEMA"].Value
	if !strings.HasPrefix(schema, "fo_gig_") || len(schema) > 63 || schema == DatabaseSchema(other) {
		t.Errorf("schema %q (another namespace's sale of the same name: %q)", schema, DatabaseSchema(other))
	}
	if _, ok := env(PurchaseDeployment(sale(), opts).Spec.Template.Spec.Containers[0])["FLUX_ORDER_DATABASE_SCHEMA"]; ok {
		t.Error("a managed database belongs to one sale: no schema")
	}
}

func TestPostgresStatefulSet_KeepsOrdersAfterTheSale(t *testing.T) {
	s := sale(func(s *salesv1alpha1.FlashSale) {
		size := resource.MustParse("5Gi")
		s.Spec.Postgres.Storage = &salesv1alpha1.StorageSpec{Size: &size, StorageClassName: ptr.To("fast")}
	})
	sts := PostgresStatefulSet(s, opts)
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("retention %+v: orders must survive the sale", p)
	}
	claim := sts.Spec.VolumeClaimTemplates[0]
	if q := claim.Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "5Gi" || *claim.Spec.StorageClassName != "fast" {
		t.Errorf("claim %+v", claim.Spec)
	}
	if claim.Labels["app.kubernetes.io/instance"] != "gig" {
		t.Errorf("the claim must be findable by the sale's labels: %v", claim.Labels)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	if c.Image != "postgres:15" || c.ReadinessProbe.Exec.Command[0] != "pg_isready" || *sts.Spec.Template.Spec.SecurityContext.RunAsUser != 999 {
		t.Errorf("postgres container %+v", c)
	}
	secret := PostgresSecret(s, "pw")
	if u := string(secret.Data[SecretKeyURL]); u != "postgres://fluxorder:pw@gig-postgres.sales.svc:5432/fluxorder?sslmode=verify-full&sslrootcert=/etc/flux-order/tls/ca.crt" {
		t.Errorf("url %s", u)
	}
}

func TestRedisDeployment_ACLNoEvictionNoPersistence(t *testing.T) {
	d := RedisDeployment(sale(), opts)
	args := d.Spec.Template.Spec.Containers[0].Args
	want := []string{"redis-server", "--aclfile", "/etc/flux-order/redis/users.acl", "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
		"--maxmemory", "201326592"} // 75% of the default 256Mi limit
	if len(args) != len(want) {
		t.Fatalf("args %q", args)
	}
	for i := range want {
		if args[i] != want[i] {
			t.Fatalf("args %q, want %q", args, want)
		}
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("two Redis must never run at once: strategy %s", d.Spec.Strategy.Type)
	}
}

func TestPurchaseRole_OnlyThisSale(t *testing.T) {
	r := PurchaseRole(sale())
	for _, rule := range r.Rules {
		if len(rule.ResourceNames) == 0 {
			t.Errorf("rule %+v is not limited to this sale's objects", rule)
		}
		for _, v := range rule.Verbs {
			if v == "delete" || v == "create" || v == "*" {
				t.Errorf("rule %+v grants %s", rule, v)
			}
		}
	}
}

func TestIngressAndURL(t *testing.T) {
	s := sale(func(s *salesv1alpha1.FlashSale) {
		s.Spec.Ingress = &salesv1alpha1.IngressSpec{Host: "gig.example.com", ClassName: ptr.To("traefik"), TLSSecretName: "gig-tls"}
	})
	ing := PurchaseIngress(s)
	if ing.Spec.Rules[0].Host != "gig.example.com" || *ing.Spec.IngressClassName != "traefik" || ing.Spec.TLS[0].SecretName != "gig-tls" ||
		ing.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Name != "gig-purchase" {
		t.Errorf("ingress %+v", ing.Spec)
	}
	if u := URL(s); u != "https://gig.example.com" {
		t.Errorf("url %s", u)
	}
	if u := URL(sale()); u != "http://gig-purchase.sales.svc" {
		t.Errorf("url without ingress %s", u)
	}
}

func TestReporterLease_BelongsToTheSale(t *testing.T) {
	l := ReporterLease(sale())
	if l.Name != "gig-purchase-reporter" || l.Namespace != "sales" || l.OwnerReferences[0].UID != "u-1" {
		t.Errorf("lease %+v", l.ObjectMeta)
	}
	if l.Spec.HolderIdentity != nil {
		t.Error("the operator must leave the election to the pods")
	}
}
