// Package chart_test renders charts/flux-order with the helm CLI and checks
// the objects it would install: the manager Deployment, its RBAC, and that
// the CRD and the manager's ClusterRole are exactly what controller-gen
// generates into config/.
package chart_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "charts/flux-order"
	namespace = "flux-order-system"
	release   = "flux-order"
	// installHint is how `make test` gets the CLI; printed when it is missing.
	installHint = "make helm   (GOBIN=$PWD/bin go install helm.sh/helm/v3/cmd/helm@v3.22.0)"
)

// root is the repository root (this package is test/chart).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// helmBin finds the helm CLI: $HELM, then bin/helm, then helm on PATH.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		if p, err := exec.LookPath(h); err == nil {
			return p
		}
		t.Fatalf("HELM=%s is not an executable; install helm with: %s", h, installHint)
	}
	if p := filepath.Join(root(t), "bin", "helm"); isExecutable(p) {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Fatalf("the helm CLI is missing (neither $HELM, bin/helm nor helm on PATH); install it with: %s", installHint)
	return ""
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// object is one rendered manifest: its kind and name, and its YAML.
type object struct {
	Kind, Name, Namespace string
	raw                   []byte
}

func (o object) into(t *testing.T, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(o.raw, v); err != nil {
		t.Fatalf("%s %s: %v\n%s", o.Kind, o.Name, err, o.raw)
	}
}

// render runs `helm template` with the given --set flags and splits the
// output into objects.
func render(t *testing.T, sets ...string) []object {
	t.Helper()
	return renderChart(t, filepath.Join(root(t), chartDir), nil, sets...)
}

// renderChart is render of the chart in dir, with extra helm flags
// (--api-versions: the CRDs the cluster is said to serve).
func renderChart(t *testing.T, dir string, flags []string, sets ...string) []object {
	t.Helper()
	args := append([]string{"template", release, dir, "--namespace", namespace}, flags...)
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return splitYAML(t, out)
}

func splitYAML(t *testing.T, data []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		if meta.Kind == "" {
			continue // a document holding only comments
		}
		objs = append(objs, object{Kind: meta.Kind, Name: meta.Metadata.Name, Namespace: meta.Metadata.Namespace, raw: doc})
	}
}

func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	var have []string
	for _, o := range objs {
		have = append(have, o.Kind+"/"+o.Name)
	}
	t.Fatalf("no %s %s rendered; have %v", kind, name, have)
	return object{}
}

func findIn(t *testing.T, objs []object, kind, name, namespace string) object {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name && o.Namespace == namespace {
			return o
		}
	}
	t.Fatalf("no %s %s/%s rendered", kind, namespace, name)
	return object{}
}

func managerDeployment(t *testing.T, objs []object) (*appsv1.Deployment, corev1.Container) {
	t.Helper()
	d := &appsv1.Deployment{}
	find(t, objs, "Deployment", "flux-order-manager").into(t, d)
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("manager pod has %d containers, want 1", n)
	}
	return d, d.Spec.Template.Spec.Containers[0]
}

func TestManagerDeployment(t *testing.T) {
	objs := render(t, "image.repository=example.com/flux-order", "image.tag=v9.9.9")
	d, c := managerDeployment(t, objs)

	if d.Namespace != namespace {
		t.Errorf("namespace %q, want %q", d.Namespace, namespace)
	}
	const image = "example.com/flux-order:v9.9.9"
	if c.Image != image || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image %q (%s), want %q (IfNotPresent)", c.Image, c.ImagePullPolicy, image)
	}
	wantArgs := []string{
		"manager", "--leader-elect",
		"--metrics-bind-address=:8443", "--health-probe-bind-address=:8081",
		"--metrics-namespace-selector=kubernetes.io/metadata.name=monitoring",
		"--purchase-image=" + image, // the purchase pods run the manager's own image
		"--redis-image=redis:7", "--postgres-image=postgres:15",
	}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["metrics"] != 8443 || ports["health"] != 8081 {
		t.Errorf("ports %v, want metrics 8443 and health 8081", ports)
	}
	for name, probe := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no HTTP probe on %s", name)
			continue
		}
		if probe.HTTPGet.Path != name || ports[probe.HTTPGet.Port.String()] != 8081 {
			t.Errorf("probe %s: path %q port %q, want %s on the health port (8081)", name, probe.HTTPGet.Path, probe.HTTPGet.Port.String(), name)
		}
	}

	// The restricted Pod Security Standard.
	ps := d.Spec.Template.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v: want runAsNonRoot and seccomp RuntimeDefault", ps)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatal("no container security context")
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Error("container: runAsNonRoot is not true")
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Error("container: readOnlyRootFilesystem is not true")
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Error("container: allowPrivilegeEscalation is not false")
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("container capabilities %+v, want drop [ALL] only", sc.Capabilities)
	case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Error("container: seccomp profile is not RuntimeDefault")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu/memory requests and a memory limit", c.Resources)
	}

	// Its identity is the ServiceAccount the RBAC binds.
	sa := d.Spec.Template.Spec.ServiceAccountName
	find(t, objs, "ServiceAccount", sa)
	for _, b := range []struct{ kind, name string }{{"ClusterRoleBinding", "flux-order-manager"}, {"RoleBinding", "flux-order-leader-election"}} {
		var rb rbacv1.RoleBinding // same shape as a ClusterRoleBinding
		find(t, objs, b.kind, b.name).into(t, &rb)
		want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: namespace}}
		if !reflect.DeepEqual(rb.Subjects, want) {
			t.Errorf("%s subjects %+v, want %+v", b.kind, rb.Subjects, want)
		}
	}

	// The metrics Service reaches the metrics port of these pods only.
	svc := &corev1.Service{}
	find(t, objs, "Service", "flux-order-manager-metrics").into(t, svc)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 8443 || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("metrics Service ports %+v, want 8443 -> metrics", svc.Spec.Ports)
	}
	if !reflect.DeepEqual(svc.Spec.Selector, d.Spec.Selector.MatchLabels) {
		t.Errorf("metrics Service selector %v, Deployment selector %v", svc.Spec.Selector, d.Spec.Selector.MatchLabels)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("pod template label %s=%q, selector wants %q", k, d.Spec.Template.Labels[k], v)
		}
	}
	if d.Spec.Selector.MatchLabels["app.kubernetes.io/component"] != "manager" {
		// The operator's own pods (purchase, redis, postgres) are labelled
		// app.kubernetes.io/name=flux-order too; the component keeps them apart.
		t.Errorf("selector %v must include app.kubernetes.io/component=manager", d.Spec.Selector.MatchLabels)
	}
}

func TestDefaultValues(t *testing.T) {
	objs := render(t)
	_, c := managerDeployment(t, objs)
	chart, err := os.ReadFile(filepath.Join(root(t), chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(chart, &meta); err != nil {
		t.Fatal(err)
	}
	// A pinned tag (never :latest) and IfNotPresent: clusters that cannot
	// reach a registry work once the image is loaded.
	want := "ghcr.io/flux-order/flux-order:" + meta.AppVersion
	if c.Image != want || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("default image %q (%s), want %q (IfNotPresent)", c.Image, c.ImagePullPolicy, want)
	}
	if !slices.Contains(c.Args, "--purchase-image="+want) {
		t.Errorf("args %q: the purchase image must default to the manager's", c.Args)
	}
	d, _ := managerDeployment(t, objs)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas %v, want 1", d.Spec.Replicas)
	}
}

func TestValuesOverride(t *testing.T) {
	objs := render(t,
		"replicaCount=2",
		"defaults.purchase.image=example.com/purchase:v1",
		"defaults.redis.image=example.com/redis:7.4",
		"defaults.postgres.image=example.com/postgres:16",
		"image.pullPolicy=Never",
		"leaderElection.enabled=false",
	)
	d, c := managerDeployment(t, objs)
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	for _, arg := range []string{"--purchase-image=example.com/purchase:v1", "--redis-image=example.com/redis:7.4", "--postgres-image=example.com/postgres:16"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
	if slices.Contains(c.Args, "--leader-elect") {
		t.Errorf("args %q: leader election is disabled", c.Args)
	}
	for _, o := range objs {
		if o.Kind == "Role" || o.Kind == "RoleBinding" {
			t.Errorf("%s %s rendered without leader election", o.Kind, o.Name)
		}
	}
	if c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("pull policy %s, want Never", c.ImagePullPolicy)
	}
}

// The leader-election Role grants Leases and Events in the release
// namespace, nothing more.
func TestLeaderElectionRole(t *testing.T) {
	role := &rbacv1.Role{}
	find(t, render(t), "Role", "flux-order-leader-election").into(t, role)
	if role.Namespace != namespace {
		t.Errorf("Role namespace %q, want %q", role.Namespace, namespace)
	}
	granted := map[string]bool{}
	for _, r := range role.Rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					granted[g+"/"+res+":"+v] = true
				}
			}
		}
	}
	for _, need := range []string{
		"coordination.k8s.io/leases:get", "coordination.k8s.io/leases:create", "coordination.k8s.io/leases:update",
		"/events:create", "events.k8s.io/events:create", "events.k8s.io/events:patch",
	} {
		if !granted[need] {
			t.Errorf("leader-election Role does not grant %s", need)
		}
	}
	for g := range granted {
		if !strings.Contains(g, "leases:") && !strings.Contains(g, "events:") {
			t.Errorf("leader-election Role grants more than leases and events: %s", g)
		}
		// client-go's Lease lock gets, creates and updates; nothing else.
		if strings.HasPrefix(g, "coordination.k8s.io/leases:") && !strings.HasSuffix(g, ":get") &&
			!strings.HasSuffix(g, ":create") && !strings.HasSuffix(g, ":update") {
			t.Errorf("leader-election Role grants more on Leases than the lock uses: %s", g)
		}
	}
}

// The manager's ClusterRole is exactly what controller-gen generates from
// the +kubebuilder:rbac markers (least privilege, nothing hand-added).
func TestClusterRoleIsGenerated(t *testing.T) {
	generated := &rbacv1.ClusterRole{}
	raw, err := os.ReadFile(filepath.Join(root(t), "config/rbac/role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(raw, generated); err != nil {
		t.Fatal(err)
	}
	if len(generated.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	rendered := &rbacv1.ClusterRole{}
	find(t, render(t), "ClusterRole", "flux-order-manager").into(t, rendered)
	if !reflect.DeepEqual(rendered.Rules, generated.Rules) {
		t.Errorf("the chart's ClusterRole rules differ from config/rbac/role.yaml: run make chart-crds\n got %+v\nwant %+v", rendered.Rules, generated.Rules)
	}
	sameFile(t, "config/rbac/role.yaml", chartDir+"/files/manager-role.yaml")
}

// Metrics are readable by whoever is bound to the chart's metrics-reader
// ClusterRole, and the manager may check callers (TokenReview, SAR).
func TestMetricsReaderRole(t *testing.T) {
	objs := render(t)
	reader := &rbacv1.ClusterRole{}
	find(t, objs, "ClusterRole", "flux-order-metrics-reader").into(t, reader)
	want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}
	if !reflect.DeepEqual(reader.Rules, want) {
		t.Errorf("metrics-reader rules %+v, want %+v", reader.Rules, want)
	}
	manager := &rbacv1.ClusterRole{}
	find(t, objs, "ClusterRole", "flux-order-manager").into(t, manager)
	groups := map[string]bool{}
	for _, r := range manager.Rules {
		for _, g := range r.APIGroups {
			groups[g] = true
		}
	}
	if !groups["authentication.k8s.io"] || !groups["authorization.k8s.io"] {
		t.Errorf("the manager cannot review callers of its metrics: groups %v", groups)
	}
}

// With watchNamespaces the manager gets a Role in each namespace, no
// cluster-wide access to the sales' kinds, and watches only those.
func TestWatchNamespaces_RolesInsteadOfTheClusterRole(t *testing.T) {
	objs := render(t, "watchNamespaces={sales-a,sales-b}")
	_, c := managerDeployment(t, objs)
	if !slices.Contains(c.Args, "--watch-namespaces=sales-a,sales-b") {
		t.Errorf("args %q lack --watch-namespaces", c.Args)
	}
	for _, o := range objs {
		if o.Kind == "ClusterRole" && o.Name == "flux-order-manager" {
			t.Fatal("a namespaced install must not have the cluster-wide manager ClusterRole")
		}
	}
	for _, ns := range []string{"sales-a", "sales-b"} {
		role := &rbacv1.Role{}
		findIn(t, objs, "Role", "flux-order-manager", ns).into(t, role)
		if len(role.Rules) == 0 {
			t.Errorf("Role in %s has no rules", ns)
		}
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, "authentication.k8s.io") {
				t.Errorf("Role in %s holds a cluster-scoped rule %+v", ns, r)
			}
		}
		findIn(t, objs, "RoleBinding", "flux-order-manager", ns)
	}
	// Issue 21, defect 2: a Role cannot grant the StorageClass read a
	// storage resize needs; without it the manager hung on a cluster-scoped
	// informer whose list was refused. It stays cluster-scoped, alone.
	for _, ns := range []string{"sales-a", "sales-b"} {
		role := &rbacv1.Role{}
		findIn(t, objs, "Role", "flux-order-manager", ns).into(t, role)
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "storageclasses") {
				t.Errorf("Role in %s holds the cluster-scoped storageclasses rule %+v", ns, r)
			}
		}
	}
	reads := &rbacv1.ClusterRole{}
	find(t, objs, "ClusterRole", "flux-order-manager-cluster-reads").into(t, reads)
	if len(reads.Rules) != 1 || !slices.Equal(reads.Rules[0].Resources, []string{"storageclasses"}) || !slices.Equal(reads.Rules[0].Verbs, []string{"get"}) {
		t.Errorf("cluster-reads ClusterRole: want only get storageclasses, got %+v", reads.Rules)
	}
	find(t, objs, "ClusterRoleBinding", "flux-order-manager-cluster-reads")
	auth := &rbacv1.ClusterRole{}
	find(t, objs, "ClusterRole", "flux-order-manager-metrics-auth").into(t, auth)
	for _, r := range auth.Rules {
		for _, g := range r.APIGroups {
			if g != "authentication.k8s.io" && g != "authorization.k8s.io" {
				t.Errorf("metrics-auth ClusterRole grants group %q", g)
			}
		}
	}
}

// crds/ holds exactly the CRDs controller-gen generates, byte for byte.
func TestCRDsAreGenerated(t *testing.T) {
	dir := root(t)
	gen, err := filepath.Glob(filepath.Join(dir, "config/crd/bases/*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no CRDs in config/crd/bases (%v)", err)
	}
	inChart, err := filepath.Glob(filepath.Join(dir, chartDir, "crds/*"))
	if err != nil {
		t.Fatal(err)
	}
	names := func(paths []string) (n []string) {
		for _, p := range paths {
			n = append(n, filepath.Base(p))
		}
		return n
	}
	if !slices.Equal(names(gen), names(inChart)) {
		t.Fatalf("chart crds/ holds %v, config/crd/bases holds %v: run make chart-crds", names(inChart), names(gen))
	}
	for _, n := range names(gen) {
		sameFile(t, "config/crd/bases/"+n, chartDir+"/crds/"+n)
	}
}

func sameFile(t *testing.T, generated, cp string) {
	t.Helper()
	a, err := os.ReadFile(filepath.Join(root(t), generated))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root(t), cp))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s: run make chart-crds", cp, generated)
	}
}

// Nothing the chart renders may make the kubelet pull on every start.
func TestNoAlwaysPull(t *testing.T) {
	for _, o := range render(t) {
		if o.Kind != "Deployment" {
			continue
		}
		d := &appsv1.Deployment{}
		o.into(t, d)
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.ImagePullPolicy == corev1.PullAlways || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
				t.Errorf("%s container %s: image %q with pull policy %q", o.Name, c.Name, c.Image, c.ImagePullPolicy)
			}
		}
	}
}

// The chart installs config/policy's ValidatingAdmissionPolicy (what the
// purchase pods may write into their sale's status) under the release's
// name, bound with Deny; purchaseStatusPolicy.enabled=false leaves it out.
func TestPurchaseStatusPolicyIsConfigs(t *testing.T) {
	sameFile(t, "config/policy/purchase_status_policy.yaml", chartDir+"/files/purchase-status-policy.yaml")
	raw, err := os.ReadFile(filepath.Join(root(t), "config/policy/purchase_status_policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	type policy struct {
		Spec map[string]any `json:"spec"`
	}
	want := policy{}
	if err := yaml.Unmarshal(raw, &want); err != nil || len(want.Spec) == 0 {
		t.Fatalf("config/policy/purchase_status_policy.yaml: %v %v", err, want)
	}
	objs := render(t)
	name := release + "-purchase-status"
	got := policy{}
	if err := yaml.Unmarshal(find(t, objs, "ValidatingAdmissionPolicy", name).raw, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("the chart's policy differs from config/policy: run make chart-crds\n got %v\nwant %v", got.Spec, want.Spec)
	}
	var binding struct {
		Spec struct {
			PolicyName        string   `json:"policyName"`
			ValidationActions []string `json:"validationActions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(find(t, objs, "ValidatingAdmissionPolicyBinding", name).raw, &binding); err != nil {
		t.Fatal(err)
	}
	if binding.Spec.PolicyName != name || !slices.Equal(binding.Spec.ValidationActions, []string{"Deny"}) {
		t.Errorf("binding %+v, want policy %s with Deny", binding.Spec, name)
	}
	for _, o := range render(t, "purchaseStatusPolicy.enabled=false") {
		if strings.HasPrefix(o.Kind, "ValidatingAdmissionPolicy") {
			t.Errorf("purchaseStatusPolicy.enabled=false still renders %s %s", o.Kind, o.Name)
		}
	}
}
