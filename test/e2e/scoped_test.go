//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/internal/testservers"
)

// Issue 21, defect 2: a namespace-scoped install (watchNamespaces) once
// froze on a storage resize. The StorageClass was read through the cache,
// the Roles of a scoped install cannot grant a cluster-scoped list, and the
// one worker waited for that informer forever: every other sale stopped
// reconciling. Now the class is read uncached (granted by the chart's
// <release>-manager-cluster-reads ClusterRole), a reconcile has a timeout
// and several sales reconcile at once.
//
// The test reconfigures the suite's operator, so it is not parallel: it
// runs alone, before the parallel tests, and always puts the cluster-wide
// install back (the same release, its values reused, watchNamespaces
// emptied) before they start.
func TestAScopedInstallGrowingOneSalesStorageLetsAnotherSalePauseWithinAMinute(t *testing.T) {
	nsA := testNamespace(t, "e2e-scoped-a")
	nsB := testNamespace(t, "e2e-scoped-b")
	op := findOperator(t)
	// Registered after the namespaces, so it runs before their deletion
	// (cleanups run last in, first out), and before the upgrade, so a
	// half-done upgrade is undone too.
	t.Cleanup(func() { op.restore(t) })

	upgradeStart := time.Now()
	op.upgrade(t, t.Context(), fmt.Sprintf(`watchNamespaces=[%q,%q]`, nsA, nsB))
	mgr := op.ready(t, t.Context(), []string{nsA, nsB})
	t.Logf("TIMING: operator scoped to %s,%s (helm upgrade, rollout, leader %s) in %.1fs", nsA, nsB, mgr, time.Since(upgradeStart).Seconds())
	op.checkScopedRBAC(t, nsA, nsB)

	// Two small sales, provisioned side by side (the two provisioning
	// slots: nothing else runs during a serial test).
	const a, b = "a", "b"
	func() {
		provisioning <- struct{}{}
		provisioning <- struct{}{}
		defer func() { <-provisioning; <-provisioning }()
		start := time.Now()
		applySale(t, nsA, a, 20, 1)
		applySale(t, nsB, b, 20, 1)
		onSale := func(s *salesv1alpha1.FlashSale) bool {
			return s.Status.Phase == salesv1alpha1.PhaseOnSale && s.Status.ReadyReplicas == 1
		}
		waitSale(t, nsA, a, 4*time.Minute, "OnSale with 1 ready purchase pod (scoped operator)", onSale)
		waitSale(t, nsB, b, 4*time.Minute, "OnSale with 1 ready purchase pod (scoped operator)", onSale)
		t.Logf("TIMING: flashsales %s/%s and %s/%s (20 seats, 1 replica) OnSale %.1fs after apply", nsA, a, nsB, b, time.Since(start).Seconds())
	}()

	// The class of a's volume decides what growing it must give.
	pvcName := "data-" + a + "-postgres-0"
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kube.Get(t.Context(), client.ObjectKey{Namespace: nsA, Name: pvcName}, pvc); err != nil {
		t.Fatalf("PVC %s/%s: %v", nsA, pvcName, err)
	}
	class := ""
	if pvc.Spec.StorageClassName != nil {
		class = *pvc.Spec.StorageClassName
	}
	expandable := false
	if class != "" {
		sc := &storagev1.StorageClass{}
		if err := kube.Get(t.Context(), client.ObjectKey{Name: class}, sc); err != nil {
			t.Fatalf("StorageClass %s of PVC %s/%s: %v", class, nsA, pvcName, err)
		}
		expandable = sc.AllowVolumeExpansion != nil && *sc.AllowVolumeExpansion
	}
	have := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	want := have.DeepCopy()
	want.Add(resource.MustParse("1Gi"))
	t.Logf("PVC %s/%s: %s, StorageClass %q, allowVolumeExpansion %v", nsA, pvcName, have.String(), class, expandable)

	// Grow a's storage, then at once pause b.
	mustKubectl(t, nil, "-n", nsA, "patch", "flashsale", a, "--type=merge",
		"-p", fmt.Sprintf(`{"spec":{"postgres":{"storage":{"size":%q}}}}`, want.String()))
	grown := time.Now()
	mustKubectl(t, nil, "-n", nsB, "patch", "flashsale", b, "--type=merge", "-p", `{"spec":{"paused":true}}`)
	paused := time.Now()
	waitSale(t, nsB, b, time.Minute, "Paused within a minute of spec.paused, while "+a+"'s storage grows", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhasePaused
	})
	t.Logf("TIMING: %s/%s Paused %.1fs after spec.paused (%.1fs after %s/%s's storage was patched to %s)",
		nsB, b, time.Since(paused).Seconds(), time.Since(grown).Seconds(), nsA, a, want.String())

	// a says what became of its volume, in Ready, and keeps selling.
	sale, err := getSale(t.Context(), nsA, a)
	if err != nil {
		t.Fatal(err)
	}
	gen := sale.Generation
	if expandable {
		testservers.Eventually(t, time.Minute, pollInterval, fmt.Sprintf("PVC %s/%s asked to grow to %s (StorageClass %s allows expansion)", nsA, pvcName, want.String(), class), func() error {
			if err := kube.Get(t.Context(), client.ObjectKey{Namespace: nsA, Name: pvcName}, pvc); err != nil {
				return err
			}
			s, err := getSale(t.Context(), nsA, a)
			if err != nil {
				return err
			}
			if c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionReady); c != nil && strings.Contains(c.Message, "may not read StorageClass") {
				t.Fatalf("flashsale %s/%s: the operator could not read StorageClass %s although the chart grants it (<release>-manager-cluster-reads): Ready %s: %s", nsA, a, class, c.Reason, c.Message)
			}
			if got := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; got.Cmp(want) != 0 {
				return fmt.Errorf("spec.resources.requests.storage %s", got.String())
			}
			return nil
		})
		t.Logf("TIMING: PVC %s/%s asked to grow to %s %.1fs after the patch", nsA, pvcName, want.String(), time.Since(grown).Seconds())
	} else {
		// The chart grants the read, so the operator knows the class and
		// says it does not allow expansion: not "may not read", not silence.
		var ready *metav1.Condition
		s := waitSale(t, nsA, a, time.Minute, "Ready saying that StorageClass "+class+" does not allow volume expansion", func(s *salesv1alpha1.FlashSale) bool {
			c := meta.FindStatusCondition(s.Status.Conditions, salesv1alpha1.ConditionReady)
			if c == nil || c.ObservedGeneration < gen {
				return false
			}
			if strings.Contains(c.Message, "may not read StorageClass") {
				t.Fatalf("flashsale %s/%s: the operator could not read StorageClass %s although the chart grants it (<release>-manager-cluster-reads): Ready %s: %s", nsA, a, class, c.Reason, c.Message)
			}
			ready = c
			return c.Status == metav1.ConditionFalse && c.Reason == "ApplyFailed" &&
				strings.Contains(c.Message, pvcName) && strings.Contains(c.Message, "does not allow volume expansion")
		})
		t.Logf("TIMING: %s/%s Ready says why its volume stays %s %.1fs after the patch: %s", nsA, a, have.String(), time.Since(grown).Seconds(), ready.Message)
		if s.Status.Phase != salesv1alpha1.PhaseOnSale {
			t.Errorf("flashsale %s/%s: a refused volume expansion must not stop the sale, expected phase OnSale, got %s", nsA, a, saleState(s))
		}
	}

	// b resumes as fast: the manager keeps reconciling every sale while
	// a's resize is retried.
	mustKubectl(t, nil, "-n", nsB, "patch", "flashsale", b, "--type=merge", "-p", `{"spec":{"paused":false}}`)
	resumed := time.Now()
	waitSale(t, nsB, b, time.Minute, "OnSale again within a minute of unpausing", func(s *salesv1alpha1.FlashSale) bool {
		return s.Status.Phase == salesv1alpha1.PhaseOnSale
	})
	t.Logf("TIMING: %s/%s OnSale again %.1fs after spec.paused=false", nsB, b, time.Since(resumed).Seconds())

	// The manager never tried a cluster-scoped StorageClass list or watch
	// it may not do (the frozen informer logged "storageclasses is
	// forbidden ... at the cluster scope" again and again).
	logs := mustKubectl(t, nil, "-n", operatorNamespace, "logs", "pod/"+mgr, "-c", "manager",
		"--since-time="+upgradeStart.UTC().Format(time.RFC3339))
	var forbidden []string
	for line := range strings.Lines(logs) {
		l := strings.ToLower(line)
		if strings.Contains(l, "forbidden") && strings.Contains(l, "storageclasses") {
			forbidden = append(forbidden, strings.TrimSpace(line))
		}
	}
	if len(forbidden) > 0 {
		t.Errorf("manager %s logged %d refused StorageClass reads since the upgrade, e.g.:\n%s", mgr, len(forbidden), strings.Join(forbidden[:min(3, len(forbidden))], "\n"))
	}
	t.Logf("manager %s: %d log lines since the upgrade, none a refused StorageClass read", mgr, strings.Count(logs, "\n"))
}

// operator is the suite's Helm release of the operator, as `make deploy`
// installed it.
type operator struct {
	release     string // the Helm release (the manager's app.kubernetes.io/instance)
	fullname    string // prefix of the chart's object names
	deployment  string // the manager Deployment, <fullname>-manager
	image       string // the manager's image, unchanged by the test's upgrades
	leaderElect bool
	helm        string // the helm binary (HELM, bin/helm, or helm on PATH)
	chart       string // charts/flux-order of this repository
}

// findOperator reads the release from the live manager Deployment.
func findOperator(t *testing.T) *operator {
	t.Helper()
	var deps appsv1.DeploymentList
	if err := kube.List(t.Context(), &deps, client.InNamespace(operatorNamespace),
		client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("expected one manager Deployment in %s (make deploy), found %d", operatorNamespace, len(deps.Items))
	}
	d := deps.Items[0]
	op := &operator{
		release:    d.Labels["app.kubernetes.io/instance"],
		fullname:   strings.TrimSuffix(d.Name, "-manager"),
		deployment: d.Name,
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "manager" {
			op.image = c.Image
			op.leaderElect = slices.Contains(c.Args, "--leader-elect")
		}
	}
	if op.release == "" || op.image == "" {
		t.Fatalf("Deployment %s/%s: no app.kubernetes.io/instance label or no manager container: not installed by the chart (make deploy)", operatorNamespace, d.Name)
	}
	if args := managerArgs(&d); slices.ContainsFunc(args, isWatchNamespaces) {
		t.Logf("the suite's operator is already namespace-scoped (an interrupted run of this test?): %v; the cleanup makes it cluster-wide again", args)
	}
	chart, err := filepath.Abs(filepath.Join("..", "..", "charts", "flux-order"))
	if err != nil {
		t.Fatal(err)
	}
	op.chart = chart
	op.helm = os.Getenv("HELM")
	if op.helm == "" {
		op.helm = "helm"
		if p, err := filepath.Abs(filepath.Join("..", "..", "bin", "helm")); err == nil {
			if _, err := os.Stat(p); err == nil {
				op.helm = p
			}
		}
	}
	t.Logf("operator: release %s, Deployment %s/%s, image %s, helm %s", op.release, operatorNamespace, op.deployment, op.image, op.helm)
	return op
}

func managerArgs(d *appsv1.Deployment) []string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "manager" {
			return c.Args
		}
	}
	return nil
}

func isWatchNamespaces(arg string) bool { return strings.HasPrefix(arg, "--watch-namespaces") }

// upgrade runs `helm upgrade` of the release with the values it has
// (--reuse-values: the image, its id annotation, the monitoring objects and
// the datastore defaults make deploy set) and setJSON on top, waiting for
// the release's resources.
func (op *operator) upgrade(t *testing.T, ctx context.Context, setJSON string) {
	t.Helper()
	if err := op.helmUpgrade(ctx, setJSON); err != nil {
		t.Fatal(err)
	}
}

func (op *operator) helmUpgrade(ctx context.Context, setJSON string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	args := []string{"upgrade", op.release, op.chart, "--kube-context", kubeContext, "--namespace", operatorNamespace,
		"--reuse-values", "--set-json", setJSON, "--wait", "--timeout", "4m"}
	cmd := exec.CommandContext(ctx, op.helm, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", op.helm, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ready waits until the manager Deployment has rolled out with
// --watch-namespaces naming watch (none: cluster-wide) and the manager's
// image unchanged, and until one of its new pods leads; it returns that pod.
func (op *operator) ready(t testing.TB, ctx context.Context, watch []string) string {
	t.Helper()
	if _, err := kubectl(ctx, nil, "-n", operatorNamespace, "rollout", "status", "deployment/"+op.deployment, "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{}
	if err := kube.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: op.deployment}, d); err != nil {
		t.Fatal(err)
	}
	args := managerArgs(d)
	i := slices.IndexFunc(args, isWatchNamespaces)
	switch {
	case len(watch) == 0 && i >= 0:
		t.Fatalf("manager Deployment: expected no --watch-namespaces (cluster-wide), got %s", args[i])
	case len(watch) > 0 && (i < 0 || args[i] != "--watch-namespaces="+strings.Join(watch, ",")):
		t.Fatalf("manager Deployment: expected --watch-namespaces=%s, got args %v", strings.Join(watch, ","), args)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "manager" && c.Image != op.image {
			t.Fatalf("manager Deployment: the upgrade changed the image from %s to %s", op.image, c.Image)
		}
	}

	// The new pods: ready, not being deleted, of the Deployment's current
	// template. With leader election, wait until one of them leads (the old
	// pod steps down on SIGTERM; the Lease expires otherwise).
	var leader string
	testservers.Eventually(t, 90*time.Second, pollInterval, "a manager pod of the new rollout ready and leading", func() error {
		var pods corev1.PodList
		if err := kube.List(ctx, &pods, client.InNamespace(operatorNamespace),
			client.MatchingLabels{"app.kubernetes.io/component": "manager"}); err != nil {
			return err
		}
		var current []string
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp == nil && podReady(p) && slices.Equal(managerArgsOf(p), args) {
				current = append(current, p.Name)
			}
		}
		if len(current) == 0 {
			return errors.New("no ready manager pod with the new arguments")
		}
		if !op.leaderElect {
			leader = current[0]
			return nil
		}
		lease := &coordinationv1.Lease{}
		if err := kube.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "flux-order-manager.fluxorder.io"}, lease); err != nil {
			return fmt.Errorf("leader election Lease: %w", err)
		}
		holder := ""
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		for _, p := range current {
			if strings.HasPrefix(holder, p+"_") {
				leader = p
				return nil
			}
		}
		return fmt.Errorf("the Lease is held by %q, not by a new pod (%s)", holder, strings.Join(current, ", "))
	})
	return leader
}

func managerArgsOf(p *corev1.Pod) []string {
	for _, c := range p.Spec.Containers {
		if c.Name == "manager" {
			return c.Args
		}
	}
	return nil
}

// checkScopedRBAC: the scoped install's permissions are the chart's, not
// the cluster-wide ClusterRole left behind: a Role in each watched
// namespace, and the one cluster-scoped read in its own ClusterRole.
func (op *operator) checkScopedRBAC(t *testing.T, namespaces ...string) {
	t.Helper()
	ctx := t.Context()
	for _, ns := range namespaces {
		if err := kube.Get(ctx, client.ObjectKey{Namespace: ns, Name: op.fullname + "-manager"}, &rbacv1.Role{}); err != nil {
			t.Errorf("scoped install: Role %s/%s-manager: %v", ns, op.fullname, err)
		}
	}
	if err := kube.Get(ctx, client.ObjectKey{Name: op.fullname + "-manager"}, &rbacv1.ClusterRole{}); !apierrors.IsNotFound(err) {
		t.Errorf("scoped install: expected the cluster-wide ClusterRole %s-manager gone (it would grant what the Roles do not), got %v", op.fullname, err)
	}
	reads := &rbacv1.ClusterRole{}
	if err := kube.Get(ctx, client.ObjectKey{Name: op.fullname + "-manager-cluster-reads"}, reads); err != nil {
		t.Fatalf("scoped install: ClusterRole %s-manager-cluster-reads (get StorageClasses): %v", op.fullname, err)
	}
	grants := false
	for _, r := range reads.Rules {
		if slices.Contains(r.APIGroups, "storage.k8s.io") && slices.Contains(r.Resources, "storageclasses") && slices.Contains(r.Verbs, "get") {
			grants = true
		}
		if slices.Contains(r.Verbs, "list") || slices.Contains(r.Verbs, "watch") {
			t.Errorf("ClusterRole %s-manager-cluster-reads: expected get only, got rule %+v", op.fullname, r)
		}
	}
	if !grants {
		t.Errorf("ClusterRole %s-manager-cluster-reads: expected get on storage.k8s.io storageclasses, got %+v", op.fullname, reads.Rules)
	}
}

// restore puts the cluster-wide install back (watchNamespaces empty, every
// other value as make deploy set it) and waits until its manager leads, so
// the parallel tests that follow see the suite's usual operator. It runs
// as a cleanup, whatever happened: t.Context() is over by then.
func (op *operator) restore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if t.Failed() {
		out, err := kubectl(ctx, nil, "-n", operatorNamespace, "logs", "--tail=60", "--prefix", "-l", "app.kubernetes.io/component=manager")
		if err != nil {
			out += "\n" + err.Error()
		}
		t.Logf("the scoped manager's last logs:\n%s", out)
	}
	start := time.Now()
	err := op.helmUpgrade(ctx, "watchNamespaces=[]")
	if err != nil {
		t.Logf("restoring the cluster-wide operator, first attempt: %v", err)
		err = op.helmUpgrade(ctx, "watchNamespaces=[]")
	}
	if err != nil {
		t.Errorf("restoring the cluster-wide operator: %v\nthe tests that follow run against a namespace-scoped operator", err)
		return
	}
	mgr := op.ready(t, ctx, nil)
	if err := kube.Get(ctx, client.ObjectKey{Name: op.fullname + "-manager"}, &rbacv1.ClusterRole{}); err != nil {
		t.Errorf("cluster-wide install restored: ClusterRole %s-manager: %v", op.fullname, err)
	}
	t.Logf("TIMING: cluster-wide operator restored (helm upgrade, rollout, leader %s) in %.1fs", mgr, time.Since(start).Seconds())
}
