package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func jwtAuth(issuer string, audiences []string, secret, key string) *salesv1alpha1.BuyerAuthSpec {
	return &salesv1alpha1.BuyerAuthSpec{JWT: salesv1alpha1.JWTAuthSpec{Issuer: issuer, Audiences: audiences,
		JWKSSecretRef: corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key}}}
}

func TestBuyerAuth_BadSpecs_RefusedByCEL(t *testing.T) {
	ns := newNamespace(t)
	optional := jwtAuth("https://id.example.com/", []string{"sale"}, "jwks", "jwks.json")
	optional.JWT.JWKSSecretRef.Optional = ptr.To(true)
	cases := []struct {
		name string
		auth *salesv1alpha1.BuyerAuthSpec
		want string
	}{
		{"no issuer", jwtAuth("", []string{"sale"}, "jwks", "jwks.json"), "spec.buyerAuth.jwt.issuer"},
		{"no audience", jwtAuth("https://id.example.com/", nil, "jwks", "jwks.json"), "spec.buyerAuth.jwt.audiences"},
		{"an empty audience", jwtAuth("https://id.example.com/", []string{""}, "jwks", "jwks.json"), "spec.buyerAuth.jwt.audiences[0]"},
		{"no secret name", jwtAuth("https://id.example.com/", []string{"sale"}, "", "jwks.json"), "buyerAuth.jwt.jwksSecretRef.name is required"},
		{"no secret key", jwtAuth("https://id.example.com/", []string{"sale"}, "jwks", ""), "buyerAuth.jwt.jwksSecretRef.key must be a Secret key"},
		{"a key that is a path", jwtAuth("https://id.example.com/", []string{"sale"}, "jwks", "../jwks"), "buyerAuth.jwt.jwksSecretRef.key must be a Secret key"},
		{"an optional secret", optional, "buyerAuth.jwt.jwksSecretRef cannot be optional"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bad-%d", i), Namespace: ns},
				Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, BuyerAuth: c.auth}}
			err := k8s.Create(context.Background(), sale)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want Invalid mentioning %q, got %v", c.want, err)
			}
		})
	}
}

// buyerJWKSVolume finds the JWKS volume and the container's mount of it.
func buyerJWKSVolume(dep *appsv1.Deployment) (*corev1.Volume, *corev1.VolumeMount) {
	var vol *corev1.Volume
	var mount *corev1.VolumeMount
	for i, v := range dep.Spec.Template.Spec.Volumes {
		if v.Name == "buyer-jwks" {
			vol = &dep.Spec.Template.Spec.Volumes[i]
		}
	}
	c := &dep.Spec.Template.Spec.Containers[0]
	for i, m := range c.VolumeMounts {
		if m.Name == "buyer-jwks" {
			mount = &c.VolumeMounts[i]
		}
	}
	return vol, mount
}

func envValue(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// TestBuyerAuth_JWKSMounted_SettingsLive: the operator mounts the JWKS
// Secret key read-only as a whole volume (no subPath: the kubelet refreshes
// it) and tells the pods where; the issuer and audiences reach the pods'
// watch without touching the pod template, and so does a new JWKS in the
// Secret; adding or removing buyerAuth rolls the pods.
func TestBuyerAuth_JWKSMounted_SettingsLive(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "platform-jwks", Namespace: ns},
		Data: map[string][]byte{"keys.json": []byte(`{"keys":[]}`)}}
	if err := k8s.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "signed-in", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10}}
	if err := k8s.Create(ctx, sale); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{}
	testservers.Eventually(t, 10*time.Second, poll, "purchase Deployment exists", func() error { return get(t, ns, "signed-in-purchase", dep) })
	waitObserved(t, sale)
	if v, m := buyerJWKSVolume(dep); v != nil || m != nil {
		t.Fatalf("a sale without buyerAuth mounts a JWKS: %+v %+v", v, m)
	}
	before := dep.Spec.Template

	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.BuyerAuth = jwtAuth("https://id.example.com/", []string{"sale-a"}, "platform-jwks", "keys.json")
	})
	testservers.Eventually(t, 10*time.Second, poll, "the JWKS volume", func() error {
		if err := get(t, ns, "signed-in-purchase", dep); err != nil {
			return err
		}
		if v, _ := buyerJWKSVolume(dep); v == nil {
			return fmt.Errorf("no buyer-jwks volume yet")
		}
		return nil
	})
	vol, mount := buyerJWKSVolume(dep)
	src := vol.Secret
	if src == nil || src.SecretName != "platform-jwks" || len(src.Items) != 1 || src.Items[0].Key != "keys.json" ||
		src.Items[0].Path != "jwks.json" || src.Optional == nil || *src.Optional {
		t.Fatalf("the JWKS volume: %+v", vol.VolumeSource)
	}
	if mount == nil || !mount.ReadOnly || mount.SubPath != "" || mount.MountPath != specs.BuyerAuthDir {
		t.Fatalf("the JWKS mount: %+v (want read-only at %s, no subPath)", mount, specs.BuyerAuthDir)
	}
	if v, ok := envValue(dep.Spec.Template.Spec.Containers[0], "FLUX_ORDER_BUYER_JWKS_FILE"); !ok || v != specs.BuyerJWKSFile {
		t.Fatalf("FLUX_ORDER_BUYER_JWKS_FILE = %q, %v", v, ok)
	}
	if dep.Spec.Template.Annotations[specs.ConfigHashAnnotation] == before.Annotations[specs.ConfigHashAnnotation] {
		t.Fatal("adding buyerAuth kept the config hash: the pods would not get the volume")
	}
	withAuth := dep.Spec.Template
	generation := dep.Generation

	// The pods follow the issuer and audiences live.
	r, err := statusreport.New(cfg, ns, "signed-in", "pod-1", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	settings := make(chan statusreport.Settings, 10)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Follow(fctx, func(s statusreport.Settings) { settings <- s })
	if first := (<-settings).BuyerAuth; first == nil || first.JWT.Issuer != "https://id.example.com/" {
		t.Fatalf("the pods' first settings: %+v", first)
	}
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.BuyerAuth.JWT.Issuer = "https://id2.example.com/"
		s.Spec.BuyerAuth.JWT.Audiences = []string{"sale-a", "sale-b"}
	})
	select {
	case st := <-settings:
		if st.BuyerAuth == nil || st.BuyerAuth.JWT.Issuer != "https://id2.example.com/" || len(st.BuyerAuth.JWT.Audiences) != 2 {
			t.Fatalf("live settings: %+v", st.BuyerAuth)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the issuer change did not reach the pods' watch")
	}
	// Neither that nor a new JWKS in the Secret touches the pod template.
	secret.Data["keys.json"] = []byte(`{"keys":[{"kty":"EC"}]}`)
	if err := k8s.Update(ctx, secret); err != nil {
		t.Fatal(err)
	}
	waitObserved(t, sale)
	if err := get(t, ns, "signed-in-purchase", dep); err != nil {
		t.Fatal(err)
	}
	if dep.Generation != generation || !equality.Semantic.DeepEqual(dep.Spec.Template, withAuth) {
		t.Fatalf("a live buyerAuth change or a JWKS rotation changed the pod template (generation %d -> %d): the pods would restart",
			generation, dep.Generation)
	}

	// Removing buyerAuth takes the volume away (a roll, one pod at a time).
	patchSpec(t, sale, func(s *salesv1alpha1.FlashSale) { s.Spec.BuyerAuth = nil })
	testservers.Eventually(t, 10*time.Second, poll, "the JWKS volume removed", func() error {
		if err := get(t, ns, "signed-in-purchase", dep); err != nil {
			return err
		}
		if v, m := buyerJWKSVolume(dep); v != nil || m != nil {
			return fmt.Errorf("still mounted")
		}
		if _, ok := envValue(dep.Spec.Template.Spec.Containers[0], "FLUX_ORDER_BUYER_JWKS_FILE"); ok {
			return fmt.Errorf("still told of the file")
		}
		return nil
	})
}
