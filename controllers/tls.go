package controllers

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/pki"
)

// The sale's CA and the datastores' certificate (docs/security.md). Each
// is replaced some time before its end: at the first moment the sale is
// not live within that window, or, while it is live, once only the urgent
// margin remains. Neither replacement restarts anything: the datastores'
// reloaders load a new certificate, and the purchase pods, which read
// their trust bundle at start, roll one at a time to a new one.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	certValidity = 365 * 24 * time.Hour
	// A certificate is renewed from 60 days before its end, outside live
	// sales; with 14 days left, even during one.
	renewBefore = 60 * 24 * time.Hour
	renewUrgent = 14 * 24 * time.Hour
	// The CA is replaced from a year and 60 days before its end (so the
	// certificates it signed last still get their full year), outside live
	// sales; with 90 days left, even during one.
	caRenewBefore = certValidity + renewBefore
	caRenewUrgent = 90 * 24 * time.Hour
)

// TrustOverlap is how long the purchase pods keep trusting a replaced CA
// after the datastores' certificate moved to the new one: time for the
// kubelet to update the datastores' Secret volume and their reloaders to
// load it (about two minutes), with room to spare. The old CA then leaves
// the trust bundle at the first moment the sale is not live.
const TrustOverlap = time.Hour

// TrustAnnotation on the purchase pods' template is a hash of the trust
// bundle (ca.crt of <sale>-tls) they are started with: a new bundle rolls
// them, and a finished rollout with the current hash is what tells the
// operator that every pod trusts every CA in it.
const TrustAnnotation = "fluxorder.io/trust-bundle"

// tlsState is what the rest of the reconcile needs from ensureTLS.
type tlsState struct {
	// trust is the TrustAnnotation the purchase pods must run with; empty
	// when the sale has no managed datastore (no CA).
	trust string
	// wake is when the CA or the certificate needs looking at again
	// (zero: nothing scheduled).
	wake time.Time
}

// replaceAt is when something ending at end is replaced: before its end
// outside a live sale, only urgent before it during one.
func replaceAt(end time.Time, before, urgent time.Duration, live bool) time.Time {
	if live {
		return end.Add(-urgent)
	}
	return end.Add(-before)
}

// ensureTLS keeps the sale's CA and the datastores' certificate current,
// never in a way that would make a client distrust a server:
//
//  1. The CA (<sale>-ca) is made once, and replaced by a new one near its
//     end (caRenewBefore, caRenewUrgent) or when the Secret is deleted.
//  2. The trust bundle (ca.crt of <sale>-tls, all the purchase pods read)
//     always holds the current CA; a new CA is added beside the old ones.
//  3. The certificate (tls.crt of <sale>-tls) is issued when missing, near
//     its end (renewBefore, renewUrgent), and, when it is not signed by the
//     current CA, only once every purchase pod runs with a bundle that
//     holds it. A certificate is never issued that would itself be due
//     at once (capped by a CA near its end): that is what looped.
//  4. Once the certificate of the current CA was issued TrustOverlap ago,
//     the other CAs leave the bundle, outside a live sale (or once they
//     have all ended).
//
// Each step is taken at most once per CA or certificate; wake schedules
// the next.
func (r *FlashSaleReconciler) ensureTLS(ctx context.Context, sale *salesv1alpha1.FlashSale) (tlsState, error) {
	if !specs.NeedsTLS(sale) {
		return tlsState{}, nil
	}
	now := r.now()
	live, _ := datastoresLive(sale, now)
	var st tlsState
	soonest := func(t time.Time) {
		if t.After(now) && (st.wake.IsZero() || t.Before(st.wake)) {
			st.wake = t
		}
	}

	// 1. The CA.
	caSecret, err := r.getSecret(ctx, sale, specs.CASecretName(sale))
	if err != nil {
		return st, err
	}
	var ca *x509.Certificate
	if caSecret != nil {
		if ca, err = pki.ParseCertificate(caSecret.Data[specs.SecretKeyCACert]); err != nil {
			return st, fmt.Errorf("Secret %s: %w (delete it: a new CA is made and moved to as in a rotation)", caSecret.Name, err)
		}
	}
	switch {
	case caSecret == nil:
		certPEM, keyPEM, err := pki.NewCAAt(now, sale.Namespace+"/"+sale.Name+" flux-order CA", caValidity)
		if err != nil {
			return st, err
		}
		caSecret = specs.CASecret(sale, certPEM, keyPEM)
		if err := r.createSecret(ctx, sale, caSecret); err != nil {
			return st, err
		}
	case !now.Before(replaceAt(ca.NotAfter, caRenewBefore, caRenewUrgent, live)):
		certPEM, keyPEM, err := pki.NewCAAt(now, sale.Namespace+"/"+sale.Name+" flux-order CA", caValidity)
		if err != nil {
			return st, err
		}
		updated := caSecret.DeepCopy()
		updated.Data = specs.CASecret(sale, certPEM, keyPEM).Data
		if err := r.Update(ctx, updated); err != nil {
			return st, err
		}
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "CARotated", "Reconcile",
			"the sale's CA ends %s: a new CA is made; the purchase pods trust both while the datastores move to it", ca.NotAfter.UTC().Format(time.RFC3339))
		caSecret = updated
	}
	caCert, caKey := caSecret.Data[specs.SecretKeyCACert], caSecret.Data[specs.SecretKeyCAKey]
	if ca, err = pki.ParseCertificate(caCert); err != nil {
		return st, err
	}
	soonest(replaceAt(ca.NotAfter, caRenewBefore, caRenewUrgent, live))
	if live {
		soonest(replaceAt(ca.NotAfter, caRenewBefore, caRenewUrgent, false))
	}
	// Both live as long as the database (reclaimPolicy), like its passwords.
	if err := r.keepWithData(ctx, caSecret, specs.CASecret(sale, caCert, caKey).ObjectMeta); err != nil {
		return st, err
	}

	current, err := r.getSecret(ctx, sale, specs.TLSSecretName(sale))
	if err != nil {
		return st, err
	}
	var bundle []*x509.Certificate
	var served *x509.Certificate
	certPEM, keyPEM := []byte(nil), []byte(nil)
	if current != nil {
		if err := r.keepWithData(ctx, current, specs.TLSSecret(sale, nil, nil, nil).ObjectMeta); err != nil {
			return st, err
		}
		bundle, _ = pki.ParseCertificates(current.Data[specs.SecretKeyCACert])
		served, _ = pki.ParseCertificate(current.Data[corev1.TLSCertKey])
		certPEM, keyPEM = current.Data[corev1.TLSCertKey], current.Data[corev1.TLSPrivateKeyKey]
	}

	// 2. The trust bundle holds the current CA.
	if !holds(bundle, ca) {
		bundle = append(bundle, ca)
	}
	trusted, err := r.purchasePodsTrust(ctx, sale, trustHash(bundle))
	if err != nil {
		return st, err
	}

	// 3. The certificate.
	renewal := ""
	switch {
	case served == nil:
		renewal = "issued the datastores' certificate"
	case !pki.SignedBy(served, ca) && trusted:
		renewal = "every purchase pod trusts the sale's new CA: the datastores' certificate is now signed by it"
	case !pki.SignedBy(served, ca):
		// Waits for the purchase pods' rollout (watched).
	case !now.Before(replaceAt(served.NotAfter, renewBefore, renewUrgent, live)):
		renewal = fmt.Sprintf("renewed the datastores' certificate (it ends %s)", served.NotAfter.UTC().Format(time.RFC3339))
	default:
		soonest(replaceAt(served.NotAfter, renewBefore, renewUrgent, live))
		if live {
			soonest(replaceAt(served.NotAfter, renewBefore, renewUrgent, false))
		}
	}
	if renewal != "" {
		notAfter := now.Add(certValidity)
		if ca.NotAfter.Before(notAfter) {
			notAfter = ca.NotAfter
		}
		if !now.Before(notAfter.Add(-renewBefore)) {
			// Only when the CA could not be replaced: never issue what
			// would be renewed again at once.
			return st, fmt.Errorf("the sale's CA ends %s, too soon to sign a certificate with: it is replaced first", ca.NotAfter.UTC().Format(time.RFC3339))
		}
		if certPEM, keyPEM, err = pki.NewServerCertAt(now, caCert, caKey, specs.TLSNames(sale)[0], specs.TLSNames(sale), nil, certValidity); err != nil {
			return st, fmt.Errorf("issue the datastores' certificate: %w", err)
		}
		if served, err = pki.ParseCertificate(certPEM); err != nil {
			return st, err
		}
		soonest(replaceAt(served.NotAfter, renewBefore, renewUrgent, live))
	}

	// 4. The old CAs leave the bundle: outside a live sale, or during
	// one once they have all ended (trusting them is then useless).
	dropped := false
	if len(bundle) > 1 && pki.SignedBy(served, ca) {
		at := served.NotBefore.Add(pki.Backdate + TrustOverlap) // issued + overlap
		ended := time.Time{}
		for _, old := range bundle {
			if !old.Equal(ca) && old.NotAfter.After(ended) {
				ended = old.NotAfter
			}
		}
		switch {
		case now.Before(at):
			soonest(at)
		case !live || now.After(ended):
			bundle, dropped = []*x509.Certificate{ca}, true
		default:
			soonest(ended.Add(time.Second))
		}
	}

	desired := specs.TLSSecret(sale, certPEM, keyPEM, pki.Bundle(bundle...))
	if current == nil {
		err = r.createSecret(ctx, sale, desired)
	} else {
		err = r.updateDerived(ctx, current, desired)
	}
	if err != nil {
		return st, err
	}
	if renewal != "" && current != nil {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "CertificateRenewed", "Reconcile",
			"%s in Secret %s; the datastores load it without a restart", renewal, desired.Name)
	}
	if dropped {
		r.Recorder.Eventf(sale, nil, corev1.EventTypeNormal, "TrustUpdated", "Reconcile",
			"the datastores serve a certificate of the sale's new CA: the purchase pods stop trusting the old one (they roll one at a time)")
	}
	st.trust = trustHash(bundle)
	return st, nil
}

// holds says whether bundle has the certificate c.
func holds(bundle []*x509.Certificate, c *x509.Certificate) bool {
	for _, b := range bundle {
		if b.Equal(c) {
			return true
		}
	}
	return false
}

// trustHash is the TrustAnnotation of a bundle.
func trustHash(bundle []*x509.Certificate) string {
	sum := sha256.Sum256(pki.Bundle(bundle...))
	return hex.EncodeToString(sum[:8])
}

// purchasePodsTrust says whether every purchase pod runs with the bundle
// of hash trust: the Deployment's template carries it and its rollout is
// complete (as kubectl rollout status decides: the current generation
// observed, every replica updated and available, no old one left).
func (r *FlashSaleReconciler) purchasePodsTrust(ctx context.Context, sale *salesv1alpha1.FlashSale, trust string) (bool, error) {
	dep := &appsv1.Deployment{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sale.Namespace, Name: specs.PurchaseName(sale)}, dep)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return dep.Spec.Template.Annotations[TrustAnnotation] == trust && rolledOut(dep), nil
}
