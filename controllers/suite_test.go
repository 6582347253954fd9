package controllers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// One real kube-apiserver and etcd for the package (no kubelet, no
// controller-manager: nothing makes pods or garbage-collects; tests patch
// workload status themselves).
var (
	cfg *rest.Config
	// managerCfg is the manager's identity: only its generated role.
	managerCfg *rest.Config
	testEnv    *envtest.Environment // for AddUser: identities with only the rights a test grants
	scheme     *k8sruntime.Scheme
	k8s        client.Client
	// stopManager stops the running manager and returns once it has stopped.
	stopManager = func() {}
	testClock   atomic.Pointer[time.Time] // nil: the real clock
	mgrCache    client.Reader             // the manager's cache, configured as in production
	testOpts    = specs.Options{PurchaseImage: "example.com/flux-order:test", RedisImage: "redis:7", PostgresImage: "postgres:15"}
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Getenv("KUBEBUILDER_ASSETS") == "" {
			_, file, _, _ := runtime.Caller(0)
			dir := filepath.Join(filepath.Dir(file), "..", "bin", "k8s", "1.37.2")
			if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
				fmt.Fprintln(os.Stderr, "FAIL: envtest needs kube-apiserver and etcd: run `hack/envtest-assets.sh` "+
					"(or `make test`, which runs it) or set KUBEBUILDER_ASSETS")
				return 1
			}
			os.Setenv("KUBEBUILDER_ASSETS", dir)
		}
		env := &envtest.Environment{
			CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
			ErrorIfCRDPathMissing: true,
		}
		var err error
		testEnv = env
		if cfg, err = env.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: start envtest:", err)
			return 1
		}
		defer env.Stop()

		scheme = k8sruntime.NewScheme()
		utilruntime.Must(clientgoscheme.AddToScheme(scheme))
		utilruntime.Must(salesv1alpha1.AddToScheme(scheme))
		if k8s, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
		// What the chart installs besides the CRD: the policy on what the
		// purchase pods may write into the status.
		if err := createFromFiles(filepath.Join("..", "config", "policy", "purchase_status_policy*.yaml")); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
		if managerCfg, err = managerIdentity(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: the manager's identity:", err)
			return 1
		}
		if err := startManager(testOpts); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			return 1
		}
		defer func() { stopManager() }()
		return m.Run()
	}())
}

// startManager runs the operator, as `flux-order manager` with opts as its
// image flags would.
func startManager(opts specs.Options) error {
	mgr, err := ctrl.NewManager(managerCfg, ctrl.Options{Scheme: scheme, Cache: CacheOptions(nil), Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		return err
	}
	r := &FlashSaleReconciler{
		Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("flux-order-manager"), Options: opts,
		Now: func() time.Time {
			if t := testClock.Load(); t != nil {
				return *t
			}
			return time.Now()
		},
	}
	mgrCache = mgr.GetCache()
	if err := r.SetupWithManager(mgr); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
		}
	}()
	stopManager = func() { cancel(); <-done }
	return nil
}

// managerIdentity is a user holding exactly the manager's generated role
// (config/rbac/role.yaml, the chart's too) cluster-wide, as the chart binds
// it: every controller test then proves that the role is enough, and a
// call the markers do not grant fails the tests, not a cluster.
func managerIdentity() (*rest.Config, error) {
	raw, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	if err != nil {
		return nil, err
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(raw, role); err != nil {
		return nil, err
	}
	const user = "flux-order-manager"
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}}
	for _, o := range []client.Object{role, binding} {
		if err := k8s.Create(context.Background(), o); err != nil {
			return nil, err
		}
	}
	// The admin's client limits (envtest's, QPS 1000): with client-go's
	// defaults a restarted manager, which reconciles every sale the suite
	// has made, would be throttled past the tests' waits.
	u, err := testEnv.AddUser(envtest.User{Name: user}, &rest.Config{QPS: cfg.QPS, Burst: cfg.Burst})
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}

// restartManager replaces the running manager by one with opts (an
// operator upgrade), and puts the suite's manager back after the test.
func restartManager(t *testing.T, opts specs.Options) {
	t.Helper()
	stopManager()
	if err := startManager(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopManager()
		if err := startManager(testOpts); err != nil {
			t.Fatal(err)
		}
	})
}

var nsSeq atomic.Int64

// newNamespace gives each test its own namespace.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("test-%d-%d", time.Now().Unix()%100000, nsSeq.Add(1))}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// poll is how often a test looks at the API server again while it waits
// (testservers.Eventually).
const poll = 50 * time.Millisecond

// createFromFiles creates every object of the YAML files matching pattern.
func createFromFiles(pattern string) error {
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no files %s: %v", pattern, err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if err := k8s.Create(context.Background(), u); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}
