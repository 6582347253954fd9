// Package statusreport publishes a sale's exact sold, held and available
// counts into its FlashSale status, so `kubectl get flashsales` is the live
// dashboard. The purchase pods of a sale elect one reporter through a Lease;
// it server-side-applies only status.sold, status.held, status.available,
// status.waitingRoom and status.lastReportTime, under its own field owner,
// so the operator and the pods never overwrite each other.
package statusreport

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// FieldOwner is the pods' server-side apply identity.
const FieldOwner = "flux-order-purchase"

var flashSales = salesv1alpha1.GroupVersion.WithResource(salesv1alpha1.FlashSaleResource)

// Counts is what the pods report: exact counts from the sale's database.
type Counts struct {
	Tickets int64 // seeded seats
	Sold    int64
	Held    int64 // under a live checkout hold
	// Cancelled orders (status.cancelled): with them the policy lets sold
	// shrink (sold + cancelled never does while the sale is live).
	Cancelled int64
	// Queue is the waiting room (status.waitingRoom); nil while the sale
	// has none, which removes the field (the pods own it).
	Queue *QueueCounts
	// Delivery is status.delivery (the webhooks' counts); nil while the
	// sale has no webhooks, which removes the field.
	Delivery *salesv1alpha1.DeliveryStatus
}

// QueueCounts is status.waitingRoom.
type QueueCounts struct {
	Waiting, Admitted, ServingPosition int64
}

// CountFunc returns the sale's counts.
type CountFunc func(ctx context.Context) (Counts, error)

// Reporter reports one sale's counts.
type Reporter struct {
	Namespace, Sale, Identity string
	Counts                    CountFunc
	Interval                  time.Duration // default 1s
	Log                       *slog.Logger

	dyn  dynamic.Interface
	kube kubernetes.Interface
}

// New returns a reporter talking to the API server at cfg.
func New(cfg *rest.Config, namespace, sale, identity string, counts CountFunc, log *slog.Logger) (*Reporter, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("create kubernetes client: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Reporter{Namespace: namespace, Sale: sale, Identity: identity, Counts: counts, Interval: time.Second,
		Log: log, dyn: dyn, kube: kube}, nil
}

// ReportOnce reads the counts and applies them to the FlashSale's status.
func (r *Reporter) ReportOnce(ctx context.Context) error {
	c, err := r.Counts(ctx)
	if err != nil {
		return fmt.Errorf("read counts: %w", err)
	}
	status := map[string]any{
		"sold":           c.Sold,
		"held":           c.Held,
		"available":      c.Tickets - c.Sold - c.Held,
		"cancelled":      c.Cancelled,
		"lastReportTime": metav1.Now().UTC().Format(time.RFC3339),
	}
	if q := c.Queue; q != nil {
		status["waitingRoom"] = map[string]any{"waiting": q.Waiting, "admitted": q.Admitted, "servingPosition": q.ServingPosition}
	}
	if c.Delivery != nil {
		d, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c.Delivery)
		if err != nil {
			return fmt.Errorf("status.delivery: %w", err)
		}
		status["delivery"] = d
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": flashSales.GroupVersion().String(),
		"kind":       salesv1alpha1.FlashSaleKind,
		"metadata":   map[string]any{"name": r.Sale, "namespace": r.Namespace},
		"status":     status,
	}}
	_, err = r.dyn.Resource(flashSales).Namespace(r.Namespace).ApplyStatus(ctx, r.Sale, u,
		metav1.ApplyOptions{FieldManager: FieldOwner, Force: true})
	if err != nil {
		return fmt.Errorf("apply status of flashsale %s/%s: %w", r.Namespace, r.Sale, err)
	}
	return nil
}

// Run competes for the sale's reporter Lease (salesv1alpha1.ReporterLeaseName)
// until ctx ends; while leading it reports every Interval. A failed report
// is logged and retried at the next tick.
func (r *Reporter) Run(ctx context.Context) {
	lease := salesv1alpha1.ReporterLeaseName(r.Sale)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Name: lease, Namespace: r.Namespace},
		Client:     r.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: r.Identity},
	}
	interval := r.Interval
	if interval <= 0 {
		interval = time.Second
	}
	for ctx.Err() == nil {
		leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   15 * time.Second,
			RenewDeadline:   10 * time.Second,
			RetryPeriod:     2 * time.Second,
			ReleaseOnCancel: true,
			Name:            lease,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					r.Log.Info("reporting the sale's counts", "identity", r.Identity)
					r.report(ctx, interval)
				},
				OnStoppedLeading: func() { r.Log.Info("stopped reporting", "identity", r.Identity) },
			},
		})
	}
}

func (r *Reporter) report(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, interval)
		if err := r.ReportOnce(rctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("status report failed", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
