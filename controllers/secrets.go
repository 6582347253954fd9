package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/pki"
)

// Lifetimes of the sale's CA and of the datastores' certificate, and how
// long before its end the certificate is renewed (renewal restarts
// Postgres, and Redis with TLS, once: a month's margin leaves room to do
// it outside a sale's hour by hand, see docs/security.md).
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// TLSFieldOwner stamps the datastores' pod templates when their
// certificate was renewed; the manager's own applies leave that field
// alone, so the restart happens once.
const TLSFieldOwner = "flux-order-tls"

// TLSRenewedAnnotation on the datastores' pod templates is when their
// certificate was last renewed.
const TLSRenewedAnnotation = "fluxorder.io/tls-renewed-at"

// ensureSecrets makes the sale's generated material once (passwords, the
// sale secret, the CA) and keeps what is derived from it current: URLs and
// the ACL file follow the spec, the datastores' certificate is renewed
// before it expires. A password is never changed: the datastores keep the
// one they were initialised with.
func (r *FlashSaleReconciler) ensureSecrets(ctx context.Context, sale *salesv1alpha1.FlashSale) error {
	generated := []struct {
		name  string
		key   string
		build func(string) *corev1.Secret
	}{
		{specs.PostgresAdminSecretName(sale), specs.SecretKeyPass, func(v string) *corev1.Secret { return specs.PostgresAdminSecret(sale, v) }},
		{specs.PostgresName(sale), specs.SecretKeyPass, func(v string) *corev1.Secret { return specs.PostgresSecret(sale, v) }},
		{specs.RedisName(sale), specs.SecretKeyPass, func(v string) *corev1.Secret { return specs.RedisSecret(sale, v) }},
		{specs.SaleSecretName(sale), specs.SecretKeySaleSecret, func(v string) *corev1.Secret { return specs.SaleSecret(sale, v) }},
	}
	for _, g := range generated {
		if g.build("") == nil {
			continue // not wanted (external datastore); an old one is left alone
		}
		existing, err := r.getSecret(ctx, sale, g.name)
		if err != nil {
			return err
		}
		if existing == nil {
			v, err := randomToken()
			if err != nil {
				return err
			}
			if err := r.createSecret(ctx, sale, g.build(v)); err != nil {
				return err
			}
			continue
		}
		v := string(existing.Data[g.key])
		if v == "" {
			return fmt.Errorf("Secret %s has no %q: restore it from a backup (a new one would lock the pods out)", g.name, g.key)
		}
		want := g.build(v)
		if uid := existing.Annotations[specs.SaleUIDAnnotation]; uid != "" && uid != string(sale.UID) {
			r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Resumed", "Reconcile",
				"Secret %s was retained from an earlier sale of this name: its data is resumed", existing.Name)
		}
		if err := r.keepWithData(ctx, existing, want.ObjectMeta); err != nil {
			return err
		}
		if err := r.updateDerived(ctx, existing, want); err != nil {
			return err
		}
	}
	return r.ensureTLS(ctx, sale)
}

// ensureTLS makes the sale's CA once and the datastores' certificate
// whenever it is missing, about to expire or not signed by that CA.
func (r *FlashSaleReconciler) ensureTLS(ctx context.Context, sale *salesv1alpha1.FlashSale) error {
	if !specs.NeedsTLS(sale) {
		return nil
	}
	ca, err := r.getSecret(ctx, sale, specs.CASecretName(sale))
	if err != nil {
		return err
	}
	if ca == nil {
		certPEM, keyPEM, err := pki.NewCA(sale.Namespace+"/"+sale.Name+" flux-order CA", caValidity)
		if err != nil {
			return err
		}
		ca = specs.CASecret(sale, certPEM, keyPEM)
		if err := r.createSecret(ctx, sale, ca); err != nil {
			return err
		}
	}
	caCert, caKey := ca.Data[specs.SecretKeyCACert], ca.Data[specs.SecretKeyCAKey]
	// Both live as long as the database (reclaimPolicy), like its passwords.
	if err := r.keepWithData(ctx, ca, specs.CASecret(sale, caCert, caKey).ObjectMeta); err != nil {
		return err
	}

	current, err := r.getSecret(ctx, sale, specs.TLSSecretName(sale))
	if err != nil {
		return err
	}
	if current != nil {
		if err := r.keepWithData(ctx, current, specs.TLSSecret(sale, nil, nil, caCert).ObjectMeta); err != nil {
			return err
		}
	}
	if current != nil && bytes.Equal(current.Data[specs.SecretKeyCACert], caCert) {
		expiring, err := pki.ExpiresBefore(current.Data[corev1.TLSCertKey], r.now().Add(renewBefore))
		if err == nil && !expiring {
			return nil
		}
	}
	certPEM, keyPEM, err := pki.NewServerCert(caCert, caKey, specs.TLSNames(sale)[0], specs.TLSNames(sale), nil, certValidity)
	if err != nil {
		return fmt.Errorf("issue the datastores' certificate: %w", err)
	}
	desired := specs.TLSSecret(sale, certPEM, keyPEM, caCert)
	if current == nil {
		return r.createSecret(ctx, sale, desired)
	}
	if err := r.updateDerived(ctx, current, desired); err != nil {
		return err
	}
	r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "CertificateRenewed", "Reconcile", "renewed the datastores' certificate in Secret %s; restarting them to load it", desired.Name)
	return r.restartDatastores(ctx, sale)
}

// restartDatastores rolls the managed datastores that serve TLS, so they
// load a renewed certificate (PostgreSQL and Redis read it only at start).
func (r *FlashSaleReconciler) restartDatastores(ctx context.Context, sale *salesv1alpha1.FlashSale) error {
	stamp := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`, TLSRenewedAnnotation, r.now().UTC().Format(time.RFC3339))
	var targets []client.Object
	if sale.Spec.Postgres.External == nil {
		targets = append(targets, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: sale.Namespace, Name: specs.PostgresName(sale)}})
	}
	if sale.Spec.Redis.External == nil && sale.Spec.Redis.TLS {
		targets = append(targets, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: sale.Namespace, Name: specs.RedisName(sale)}})
	}
	for _, obj := range targets {
		err := r.Patch(ctx, obj, client.RawPatch(types.MergePatchType, []byte(stamp)), client.FieldOwner(TLSFieldOwner))
		if client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

// getSecret reads one of the sale's Secrets from the cache (which holds
// only the operator's); nil when it does not exist.
func (r *FlashSaleReconciler) getSecret(ctx context.Context, sale *salesv1alpha1.FlashSale, name string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: name}, s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return s, err
}

func (r *FlashSaleReconciler) createSecret(ctx context.Context, sale *salesv1alpha1.FlashSale, s *corev1.Secret) error {
	err := r.Create(ctx, s)
	if apierrors.IsAlreadyExists(err) {
		// Not in the cache but in the API: someone else's Secret by that name.
		return fmt.Errorf("Secret %s exists but is not the operator's (no label app.kubernetes.io/managed-by=flux-order): rename or delete it", s.Name)
	}
	if err != nil {
		return err
	}
	r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Created", "Reconcile", "created Secret %s with generated credentials", s.Name)
	return nil
}

// updateDerived rewrites a Secret's data when what is derived from its
// generated values changed (the caller keeps those values).
func (r *FlashSaleReconciler) updateDerived(ctx context.Context, existing, desired *corev1.Secret) error {
	same := len(existing.Data) == len(desired.Data)
	for k, v := range desired.Data {
		same = same && bytes.Equal(existing.Data[k], v)
	}
	if same {
		return nil
	}
	updated := existing.DeepCopy()
	updated.Data = desired.Data
	return r.Update(ctx, updated)
}

// randomToken is 192 bits from crypto/rand, URL-safe (it goes into URLs
// and an ACL file).
func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
