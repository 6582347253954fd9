package cmd

import (
	"crypto/tls"
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers"
	"github.com/flux-order/flux-order/controllers/specs"
)

// DefaultImage is the operator's own image, the default of the purchase
// pods' image: one image runs both.
func DefaultImage() string { return "ghcr.io/flux-order/flux-order:" + Version }

// NewScheme knows the built-in kinds and the FlashSale.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(salesv1alpha1.AddToScheme(s))
	return s
}

func newManagerCommand() *cobra.Command {
	var (
		metricsAddr, probeAddr string
		metricsInsecure        bool
		leaderElect            bool
		watchNamespaces        []string
		metricsNamespaces      string
		opts                   specs.Options
	)
	c := &cobra.Command{
		Use:   "manager",
		Short: "Run the FlashSale operator",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := bindEnv(c.Flags()); err != nil {
				return err
			}
			if metricsNamespaces != "" {
				sel, err := metav1.ParseToLabelSelector(metricsNamespaces)
				if err != nil {
					return fmt.Errorf("--metrics-namespace-selector: %w", err)
				}
				opts.MetricsNamespaces = sel
			}
			log := newLogger()
			ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
			metrics := metricsserver.Options{BindAddress: metricsAddr}
			if !metricsInsecure {
				// HTTPS (a self-signed certificate unless one is mounted),
				// and only for callers the API server authenticates and
				// allows "get" on the non-resource URL /metrics.
				metrics.SecureServing = true
				metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
				// HTTP/1.1 only, as kubebuilder's scaffold: HTTP/2's rapid
				// reset and stream cancellation attacks (CVE-2023-44487,
				// CVE-2023-39325) need no credentials.
				metrics.TLSOpts = []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}
			}
			mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
				Scheme:                 NewScheme(),
				Cache:                  controllers.CacheOptions(watchNamespaces),
				Metrics:                metrics,
				HealthProbeBindAddress: probeAddr,
				LeaderElection:         leaderElect,
				LeaderElectionID:       "flux-order-manager.fluxorder.io",
				// Step down fast on SIGTERM so the next leader starts at once.
				LeaderElectionReleaseOnCancel: true,
			})
			if err != nil {
				return err
			}
			if err := (&controllers.FlashSaleReconciler{
				Client:   mgr.GetClient(),
				Recorder: mgr.GetEventRecorder("flux-order-manager"),
				Options:  opts,
			}).SetupWithManager(mgr); err != nil {
				return err
			}
			// Every sale's status as series of the manager's /metrics.
			if err := ctrlmetrics.Registry.Register(&controllers.SaleMetrics{Reader: mgr.GetClient()}); err != nil {
				return err
			}
			if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
				return err
			}
			if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
				return err
			}
			log.Info("starting manager", "version", Version, "purchaseImage", opts.PurchaseImage, "watchNamespaces", watchNamespaces)
			return mgr.Start(c.Context())
		},
	}
	f := c.Flags()
	f.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "address of the Prometheus metrics endpoint (0 disables it)")
	f.BoolVar(&metricsInsecure, "metrics-insecure", false, "serve metrics over plain HTTP without authentication (development only)")
	f.StringSliceVar(&watchNamespaces, "watch-namespaces", nil, "namespaces to watch (comma-separated); empty watches every namespace")
	f.StringVar(&metricsNamespaces, "metrics-namespace-selector", "", "label selector of the namespaces allowed to scrape the purchase pods' metrics port (empty: none)")
	f.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.BoolVar(&leaderElect, "leader-elect", false, "elect one active manager (run several replicas for availability)")
	f.StringVar(&opts.PurchaseImage, "purchase-image", DefaultImage(), "default image of the purchase pods (the operator's own)")
	f.StringVar(&opts.RedisImage, "redis-image", "redis:7", "default image of each sale's Redis")
	f.StringVar(&opts.PostgresImage, "postgres-image", "postgres:15", "default image of each sale's PostgreSQL")
	return c
}
