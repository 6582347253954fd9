package specs

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

func ref(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

func TestPurchaseDeployment_NoLiteralCredentials_OnlyItsOwnSecrets(t *testing.T) {
	variants := map[string]*salesv1alpha1.FlashSale{
		"managed":           sale(),
		"managed redis TLS": sale(func(s *salesv1alpha1.FlashSale) { s.Spec.Redis.TLS = true }),
		"external URLs": sale(func(s *salesv1alpha1.FlashSale) {
			s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{URLSecretRef: ref("redis-conn", "url"), CASecretRef: ref("redis-conn", "ca")}
			s.Spec.Postgres.External = &salesv1alpha1.ExternalPostgres{URLSecretRef: *ref("pg-conn", "dsn"), CASecretRef: ref("pg-conn", "ca")}
		}),
		"buyer identity": sale(func(s *salesv1alpha1.FlashSale) {
			s.Spec.BuyerAuth = &salesv1alpha1.BuyerAuthSpec{JWT: salesv1alpha1.JWTAuthSpec{
				Issuer: "https://id.example.com/", Audiences: []string{"gig"}, JWKSSecretRef: *ref("platform-jwks", "jwks.json")}}
		}),
	}
	for name, s := range variants {
		spec := PurchaseDeployment(s, opts).Spec.Template.Spec
		e := env(spec.Containers[0])
		for _, v := range spec.Containers[0].Env {
			if strings.Contains(v.Value, "://") || strings.Contains(strings.ToLower(v.Value), "password") {
				t.Errorf("%s: %s holds a literal connection string %q", name, v.Name, v.Value)
			}
		}
		for _, k := range []string{"FLUX_ORDER_REDIS_URL", "FLUX_ORDER_DATABASE_URL", "FLUX_ORDER_SALE_SECRET"} {
			if e[k].ValueFrom == nil || e[k].ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: %s must come from a Secret key, got %+v", name, k, e[k])
			}
		}
		if _, ok := e["FLUX_ORDER_REDIS_ADDR"]; ok {
			t.Errorf("%s: a Redis with credentials must not be given by address", name)
		}
		// The pods never see the superuser's password, the CA's key or
		// the servers' keys.
		for _, vol := range spec.Volumes {
			var secretName string
			var items []corev1.KeyToPath
			switch {
			case vol.Secret != nil:
				secretName, items = vol.Secret.SecretName, vol.Secret.Items
			case vol.Projected != nil:
				for _, p := range vol.Projected.Sources {
					items = append(items, p.Secret.Items...)
				}
			}
			if secretName == CASecretName(s) || secretName == PostgresAdminSecretName(s) {
				t.Errorf("%s: volume %s mounts Secret %s", name, vol.Name, secretName)
			}
			if len(items) == 0 {
				t.Errorf("%s: volume %s mounts every key of its Secret; only CA certificates are wanted", name, vol.Name)
			}
			for _, it := range items {
				if strings.Contains(it.Key, "key") {
					t.Errorf("%s: volume %s mounts key %s", name, vol.Name, it.Key)
				}
			}
		}
		for _, v := range spec.Containers[0].Env {
			if v.ValueFrom != nil && v.ValueFrom.SecretKeyRef != nil && v.ValueFrom.SecretKeyRef.Name == PostgresAdminSecretName(s) {
				t.Errorf("%s: %s reads the superuser's Secret", name, v.Name)
			}
		}
	}

	ext := variants["external URLs"]
	e := env(PurchaseDeployment(ext, opts).Spec.Template.Spec.Containers[0])
	if r := e["FLUX_ORDER_REDIS_URL"].ValueFrom.SecretKeyRef; r.Name != "redis-conn" || r.Key != "url" {
		t.Errorf("external redis url from %+v", r)
	}
	if e["FLUX_ORDER_REDIS_CA_FILE"].Value != ExternalRedCAFile {
		t.Errorf("external redis CA file %q", e["FLUX_ORDER_REDIS_CA_FILE"].Value)
	}
	if e := env(PurchaseDeployment(variants["managed redis TLS"], opts).Spec.Template.Spec.Containers[0]); e["FLUX_ORDER_REDIS_CA_FILE"].Value != CAFile {
		t.Errorf("managed TLS redis CA file %q", e["FLUX_ORDER_REDIS_CA_FILE"].Value)
	}
	// The managed URL's Secret moves with spec.redis.tls: each template
	// pins the scheme it was made for; an external URL is the user's.
	for name, want := range map[string]string{"managed": "redis", "managed redis TLS": "rediss", "external URLs": ""} {
		if got := env(PurchaseDeployment(variants[name], opts).Spec.Template.Spec.Containers[0])["FLUX_ORDER_REDIS_SCHEME"].Value; got != want {
			t.Errorf("%s: FLUX_ORDER_REDIS_SCHEME %q, want %q", name, got, want)
		}
	}
}

func TestRedisSecret_DefaultUserOff_PurchaseUserOnlyItsKeysAndCommands(t *testing.T) {
	sec := RedisSecret(sale(), "s3cret")
	acl := string(sec.Data[SecretKeyACL])
	lines := strings.Split(strings.TrimSpace(acl), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "user default off") || strings.Contains(lines[0], "nopass") {
		t.Fatalf("the default user must be off and password-less logins impossible:\n%s", acl)
	}
	for _, want := range []string{"user purchase on", ">s3cret", "~fs:gig:*", "-@all", "+set", "+evalsha"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("purchase user lacks %q: %s", want, lines[1])
		}
	}
	for _, never := range []string{"+flushall", "+flushdb", "+config", "+@all", "+keys", "+acl", "+replicaof", "+debug", "+shutdown", "allkeys", "~*"} {
		if strings.Contains(lines[1], never) {
			t.Errorf("purchase user must not have %q: %s", never, lines[1])
		}
	}
	if u := string(sec.Data[SecretKeyURL]); u != "redis://purchase:s3cret@gig-redis.sales.svc:6379/0" {
		t.Errorf("url %s", u)
	}
	tls := RedisSecret(sale(func(s *salesv1alpha1.FlashSale) { s.Spec.Redis.TLS = true }), "s3cret")
	if u := string(tls.Data[SecretKeyURL]); !strings.HasPrefix(u, "rediss://") {
		t.Errorf("TLS url %s", u)
	}
}

func TestRedisArgs_TLSOnlyWhenAskedFor(t *testing.T) {
	plain := strings.Join(RedisArgs(sale()), " ")
	if strings.Contains(plain, "tls") || strings.Contains(plain, "protected-mode no") {
		t.Errorf("plain args %s", plain)
	}
	s := sale(func(s *salesv1alpha1.FlashSale) { s.Spec.Redis.TLS = true })
	args := strings.Join(RedisArgs(s), " ")
	for _, want := range []string{"--port 0", "--tls-port 6379", "--tls-cert-file /etc/flux-order/tls/tls.crt", "--tls-auth-clients no"} {
		if !strings.Contains(args, want) {
			t.Errorf("TLS args lack %q: %s", want, args)
		}
	}
	d := RedisDeployment(s, opts)
	if v := d.Spec.Template.Spec.Volumes; len(v) != 3 || v[2].Secret.SecretName != "gig-tls" {
		t.Errorf("volumes %+v", v)
	}
}

func TestPostgres_SuperuserSeparate_AppRoleOverTLSOnly(t *testing.T) {
	s := sale()
	c := PostgresStatefulSet(s, opts).Spec.Template.Spec.Containers[0]
	e := env(c)
	if e["POSTGRES_USER"].Value != PostgresSuperuser || e["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef.Name != "gig-postgres-admin" {
		t.Errorf("superuser %+v / %+v", e["POSTGRES_USER"], e["POSTGRES_PASSWORD"].ValueFrom)
	}
	if e["FLUX_ORDER_APP_PASSWORD"].ValueFrom.SecretKeyRef.Name != "gig-postgres" || e["FLUX_ORDER_APP_USER"].Value != PostgresUser {
		t.Errorf("app role %+v", e["FLUX_ORDER_APP_PASSWORD"].ValueFrom)
	}
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"ssl=on", "hba_file=/etc/flux-order/postgres/pg_hba.conf", "ssl_key_file=/etc/flux-order/tls/tls.key"} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q: %s", want, args)
		}
	}
	cm := PostgresConfigMap(s)
	hba := cm.Data["pg_hba.conf"]
	if !strings.Contains(hba, "hostssl fluxorder  fluxorder") || strings.Contains(hba, "host    all        all        0.0.0.0/0     scram") {
		t.Errorf("pg_hba.conf:\n%s", hba)
	}
	for _, line := range strings.Split(hba, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "host" && f[len(f)-1] != "reject" {
			t.Errorf("a non-TLS network login is allowed: %q", line)
		}
	}
	script := cm.Data["10-app-role.sh"]
	for _, want := range []string{"NOSUPERUSER", "NOCREATEDB", "NOCREATEROLE", `OWNER TO :"app"`} {
		if !strings.Contains(script, want) {
			t.Errorf("app role script lacks %q", want)
		}
	}
	if PostgresAdminSecret(s, "x").Name == PostgresSecret(s, "y").Name {
		t.Error("the superuser's password must live in its own Secret")
	}
}

func TestNetworkPolicies_DatastoresOnlyFromTheirPurchasePods(t *testing.T) {
	o := opts
	o.MetricsNamespaces = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}
	s := sale()
	for _, p := range []struct {
		name      string
		component string
		port      int32
	}{
		{"gig-redis", ComponentRedis, RedisPort},
		{"gig-postgres", ComponentPostgres, PostgresPort},
	} {
		np := RedisNetworkPolicy(s)
		if p.component == ComponentPostgres {
			np = PostgresNetworkPolicy(s)
		}
		if np.Name != p.name || np.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"] != p.component ||
			np.Spec.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "gig" {
			t.Errorf("%s selects %+v", p.name, np.Spec.PodSelector)
		}
		if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) != 1 {
			t.Fatalf("%s ingress %+v", p.name, np.Spec.Ingress)
		}
		from := np.Spec.Ingress[0].From[0]
		if from.NamespaceSelector != nil || from.PodSelector.MatchLabels["app.kubernetes.io/component"] != ComponentPurchase ||
			from.PodSelector.MatchLabels["app.kubernetes.io/instance"] != "gig" {
			t.Errorf("%s admits %+v", p.name, from)
		}
		if np.Spec.Ingress[0].Ports[0].Port.IntValue() != int(p.port) {
			t.Errorf("%s port %v", p.name, np.Spec.Ingress[0].Ports[0].Port)
		}
	}
	pp := PurchaseNetworkPolicy(s, o)
	if len(pp.Spec.Ingress) != 2 || pp.Spec.Ingress[0].From != nil || pp.Spec.Ingress[0].Ports[0].Port.IntValue() != PurchasePort {
		t.Fatalf("purchase policy %+v", pp.Spec.Ingress)
	}
	if m := pp.Spec.Ingress[1]; m.Ports[0].Port.IntValue() != MetricsPort || m.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
		t.Errorf("metrics rule %+v", m)
	}
	if pp := PurchaseNetworkPolicy(s, opts); len(pp.Spec.Ingress) != 1 {
		t.Errorf("without a monitoring selector the metrics port must stay closed: %+v", pp.Spec.Ingress)
	}

	off := sale(func(s *salesv1alpha1.FlashSale) { s.Spec.NetworkPolicy.Enabled = ptr.To(false) })
	if RedisNetworkPolicy(off) != nil || PostgresNetworkPolicy(off) != nil || PurchaseNetworkPolicy(off, o) != nil {
		t.Error("networkPolicy.enabled=false must remove the policies")
	}
	ext := sale(func(s *salesv1alpha1.FlashSale) {
		s.Spec.Redis.External = &salesv1alpha1.ExternalRedis{URLSecretRef: ref("r", "url")}
		s.Spec.Postgres.External = &salesv1alpha1.ExternalPostgres{URLSecretRef: *ref("p", "url")}
	})
	if RedisNetworkPolicy(ext) != nil || PostgresNetworkPolicy(ext) != nil || PurchaseNetworkPolicy(ext, o) == nil {
		t.Error("external datastores are not ours to close; the purchase pods still are")
	}
}

func TestPurchaseService_MetricsOnTheirOwnPort_IngressRoutesOnlyHTTP(t *testing.T) {
	s := sale(func(s *salesv1alpha1.FlashSale) { s.Spec.Ingress = &salesv1alpha1.IngressSpec{Host: "gig.example.com"} })
	svc := PurchaseService(s)
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[1].Name != "metrics" || svc.Spec.Ports[1].Port != MetricsPort {
		t.Errorf("ports %+v", svc.Spec.Ports)
	}
	if p := PurchaseIngress(s).Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port; p.Name != "http" {
		t.Errorf("ingress routes to %+v", p)
	}
}
