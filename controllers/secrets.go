package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
)

// ensureSecrets makes the sale's generated material once (passwords, the
// sale secret, the CA) and keeps what is derived from it current: URLs and
// the ACL file follow the spec, the datastores' certificate is renewed
// before it expires (ensureTLS). A password is never changed: the
// datastores keep the one they were initialised with.
func (r *FlashSaleReconciler) ensureSecrets(ctx context.Context, sale *salesv1alpha1.FlashSale) (tlsState, error) {
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
			return tlsState{}, err
		}
		if existing == nil {
			v, err := randomToken()
			if err != nil {
				return tlsState{}, err
			}
			if err := r.createSecret(ctx, sale, g.build(v)); err != nil {
				return tlsState{}, err
			}
			continue
		}
		v := string(existing.Data[g.key])
		if v == "" {
			return tlsState{}, fmt.Errorf("Secret %s has no %q: restore it from a backup (a new one would lock the pods out)", g.name, g.key)
		}
		want := g.build(v)
		if uid := existing.Annotations[specs.SaleUIDAnnotation]; uid != "" && uid != string(sale.UID) {
			r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "Resumed", "Reconcile",
				"Secret %s was retained from an earlier sale of this name: its data is resumed", existing.Name)
		}
		if err := r.keepWithData(ctx, existing, want.ObjectMeta); err != nil {
			return tlsState{}, err
		}
		if err := r.updateDerived(ctx, existing, want); err != nil {
			return tlsState{}, err
		}
	}
	return r.ensureTLS(ctx, sale)
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
