package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
	"github.com/flux-order/flux-order/controllers/specs"
	"github.com/flux-order/flux-order/internal/testservers"
	"github.com/flux-order/flux-order/purchase/statusreport"
)

func ref(name, key string) corev1.SecretKeySelector {
	return corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}

func TestValidation_Webhooks_RefusedWithActionableMessages(t *testing.T) {
	ns := newNamespace(t)
	hook := func() salesv1alpha1.WebhookSpec {
		return salesv1alpha1.WebhookSpec{Name: "orders", URLSecretRef: ref("hook", "url"), Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}}
	}
	cases := []struct {
		name  string
		hooks func() []salesv1alpha1.WebhookSpec
		want  string
	}{
		{"two webhooks of one name", func() []salesv1alpha1.WebhookSpec { return []salesv1alpha1.WebhookSpec{hook(), hook()} }, "Duplicate value"},
		{"no events", func() []salesv1alpha1.WebhookSpec { h := hook(); h.Events = nil; return []salesv1alpha1.WebhookSpec{h} }, "events"},
		{"unknown event", func() []salesv1alpha1.WebhookSpec {
			h := hook()
			h.Events = []salesv1alpha1.WebhookEvent{"order.shipped"}
			return []salesv1alpha1.WebhookSpec{h}
		}, "Unsupported value"},
		{"an event twice", func() []salesv1alpha1.WebhookSpec {
			h := hook()
			h.Events = []salesv1alpha1.WebhookEvent{salesv1alpha1.EventSaleEnded, salesv1alpha1.EventSaleEnded}
			return []salesv1alpha1.WebhookSpec{h}
		}, "Duplicate value"},
		{"a name that is no DNS label", func() []salesv1alpha1.WebhookSpec {
			h := hook()
			h.Name = "Orders_1"
			return []salesv1alpha1.WebhookSpec{h}
		}, "spec.delivery.webhooks[0].name"},
		{"no URL Secret", func() []salesv1alpha1.WebhookSpec {
			h := hook()
			h.URLSecretRef.Name = ""
			return []salesv1alpha1.WebhookSpec{h}
		}, "urlSecretRef.name names the Secret"},
		{"a CA with insecureHTTP", func() []salesv1alpha1.WebhookSpec {
			h := hook()
			h.InsecureHTTP, h.CASecretRef = true, &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "ca"}, Key: "ca.crt"}
			return []salesv1alpha1.WebhookSpec{h}
		}, "caSecretRef verifies an HTTPS endpoint"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("hooks-%d", i), Namespace: ns},
				Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, Delivery: &salesv1alpha1.DeliverySpec{Webhooks: c.hooks()}}}
			err := k8s.Create(context.Background(), sale)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want Invalid mentioning %q, got %v", c.want, err)
			}
		})
	}
	ok := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "hooks-ok", Namespace: ns},
		Spec: salesv1alpha1.FlashSaleSpec{Tickets: 10, Delivery: &salesv1alpha1.DeliverySpec{Webhooks: []salesv1alpha1.WebhookSpec{hook()}}}}
	if err := k8s.Create(context.Background(), ok); err != nil {
		t.Fatalf("a valid webhook refused: %v", err)
	}
}

// webhooksFile is the resolved file the purchase pods would read.
func webhooksFile(t *testing.T, ns, sale string) (salesv1alpha1.WebhooksFile, error) {
	var f salesv1alpha1.WebhooksFile
	s := &corev1.Secret{}
	if err := get(t, ns, sale+"-webhooks", s); err != nil {
		return f, err
	}
	err := json.Unmarshal(s.Data[salesv1alpha1.WebhooksFileKey], &f)
	return f, err
}

func TestWebhooks_SecretsResolvedIntoTheMountedFile_GeneratedSigningSecretKept_PodsNeverRestart(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	sale := createSale(t, ns, "hooks")

	// No webhooks: the file exists (empty) and is mounted, so the first
	// webhook will not change the pod template.
	var template string
	testservers.Eventually(t, 10*time.Second, poll, "the empty webhooks file and the mount", func() error {
		f, err := webhooksFile(t, ns, "hooks")
		if err != nil {
			return err
		}
		if len(f.Webhooks) != 0 {
			return fmt.Errorf("webhooks %v without spec.delivery", f.Webhooks)
		}
		d, err := purchaseDeployment(t, ns, "hooks")
		if err != nil {
			return err
		}
		if !mountsWebhooks(d.Spec.Template.Spec) {
			return fmt.Errorf("the purchase pods do not mount %s at %s", "hooks-webhooks", specs.WebhooksDir)
		}
		template = d.Spec.Template.Annotations[specs.ConfigHashAnnotation] + "/" + fmt.Sprint(d.Generation)
		return nil
	})

	// The owner's Secrets: a URL, a rotation pair of signing secrets.
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "receiver", Namespace: ns}, StringData: map[string]string{
		"url":     "https://orders.example.com/hooks",
		"http":    "http://receiver.sales.svc/hooks",
		"signing": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
	}}
	if err := k8s.Create(ctx, own); err != nil {
		t.Fatal(err)
	}
	if err := tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) {
		sign := ref("receiver", "signing")
		s.Spec.Delivery = &salesv1alpha1.DeliverySpec{Webhooks: []salesv1alpha1.WebhookSpec{
			{Name: "platform", URLSecretRef: ref("receiver", "url"), SigningSecretRef: &sign,
				Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed, salesv1alpha1.EventSaleEnded}},
			{Name: "mailer", URLSecretRef: ref("receiver", "url"), Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}},
			{Name: "insecure", URLSecretRef: ref("receiver", "http"), Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}},
			{Name: "missing", URLSecretRef: ref("nowhere", "url"), Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}},
		}}
	}); err != nil {
		t.Fatal(err)
	}
	var generated string
	testservers.Eventually(t, 10*time.Second, poll, "the webhooks resolved", func() error {
		f, err := webhooksFile(t, ns, "hooks")
		if err != nil {
			return err
		}
		byName := map[string]salesv1alpha1.ResolvedWebhook{}
		for _, w := range f.Webhooks {
			byName[w.Name] = w
		}
		p, m, i, x := byName["platform"], byName["mailer"], byName["insecure"], byName["missing"]
		if p.URL != "https://orders.example.com/hooks" || len(p.SigningSecrets) != 2 || p.Error != "" || len(p.Events) != 2 {
			return fmt.Errorf("platform resolved as %+v", p)
		}
		if m.URL == "" || len(m.SigningSecrets) != 1 || !strings.HasPrefix(m.SigningSecrets[0], "whsec_") || len(m.SigningSecrets[0]) < 40 {
			return fmt.Errorf("mailer (generated signing secret) resolved as %+v", m)
		}
		generated = m.SigningSecrets[0]
		if i.URL != "" || !strings.Contains(i.Error, "insecureHTTP") {
			return fmt.Errorf("an http:// URL without insecureHTTP must be refused, got %+v", i)
		}
		if !strings.Contains(x.Error, "Secret nowhere does not exist") {
			return fmt.Errorf("a missing Secret must be named, got %+v", x)
		}
		return nil
	})
	saleSecret := &corev1.Secret{}
	if err := get(t, ns, "hooks-sale", saleSecret); err != nil {
		t.Fatal(err)
	}
	if got := string(saleSecret.Data[salesv1alpha1.WebhookSigningSecretKey("mailer")]); got != generated {
		t.Errorf("the generated signing secret must live in hooks-sale: %q, file has %q", got, generated)
	}
	if len(saleSecret.Data[specs.SecretKeySaleSecret]) == 0 {
		t.Errorf("the sale secret was lost beside the webhook key")
	}
	testservers.Eventually(t, 10*time.Second, poll, "WebhooksReady False naming the unresolved", func() error {
		c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionWebhooksReady)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "missing:") || !strings.Contains(c.Message, "insecure:") {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})

	// Fix them: allow http, create the Secret; a later reconcile (any
	// spec change) keeps the generated secret and makes the sale ready.
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nowhere", Namespace: ns},
		StringData: map[string]string{"url": "https://other.example.com/"}}); err != nil {
		t.Fatal(err)
	}
	if err := tryUpdate(t, sale, func(s *salesv1alpha1.FlashSale) {
		s.Spec.Delivery.Webhooks[2].InsecureHTTP = true
		s.Spec.MaxTicketsPerBuyer = 2
	}); err != nil {
		t.Fatal(err)
	}
	testservers.Eventually(t, 10*time.Second, poll, "WebhooksReady True", func() error {
		c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionWebhooksReady)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	f, err := webhooksFile(t, ns, "hooks")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range f.Webhooks {
		if w.Name == "mailer" && w.SigningSecrets[0] != generated {
			t.Errorf("the generated signing secret changed on reconcile")
		}
	}
	d, err := purchaseDeployment(t, ns, "hooks")
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Annotations[specs.ConfigHashAnnotation] + "/" + fmt.Sprint(d.Generation); got != template {
		t.Errorf("adding and changing webhooks changed the purchase pod template (%s -> %s): the pods would restart", template, got)
	}
}

func mountsWebhooks(pod corev1.PodSpec) bool {
	vol := ""
	for _, v := range pod.Volumes {
		if v.Secret != nil && strings.HasSuffix(v.Secret.SecretName, "-webhooks") {
			vol = v.Name
		}
	}
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.Name == vol && vol != "" && m.MountPath == specs.WebhooksDir && m.SubPath == "" {
			return true
		}
	}
	return false
}

func purchaseDeployment(t *testing.T, ns, sale string) (*appsv1.Deployment, error) {
	d := &appsv1.Deployment{}
	return d, get(t, ns, sale+"-purchase", d)
}

func TestWebhooks_PodsReportDelivery_OperatorWarnsOfAnEndpointFailingOverAMinute(t *testing.T) {
	ns := newNamespace(t)
	createSale(t, ns, "failing", func(s *salesv1alpha1.FlashSale) {
		s.Spec.Delivery = &salesv1alpha1.DeliverySpec{Webhooks: []salesv1alpha1.WebhookSpec{
			{Name: "platform", URLSecretRef: ref("nowhere", "url"), Events: []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}},
		}}
	})
	testservers.Eventually(t, 10*time.Second, poll, "role binding", func() error { return get(t, ns, "failing-purchase", &rbacv1.RoleBinding{}) })
	since := metav1.NewTime(time.Now().Add(-30 * time.Second).Truncate(time.Second))
	delivery := &salesv1alpha1.DeliveryStatus{Summary: "12 pending", Webhooks: []salesv1alpha1.WebhookDeliveryStatus{
		{Name: "platform", Pending: 12, Delivered: 3, FailingSince: &since, LastError: "POST platform: answered 503"},
	}}
	r, err := statusreport.New(asPurchasePod(ns, "failing"), ns, "failing", "pod-1", func(context.Context) (statusreport.Counts, error) {
		return statusreport.Counts{Tickets: 10, Sold: 3, Delivery: delivery}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The pods (their own identity, under the status policy) may write
	// status.delivery.
	if err := r.ReportOnce(context.Background()); err != nil {
		t.Fatalf("the pods must be allowed to report status.delivery: %v", err)
	}
	sale := &salesv1alpha1.FlashSale{ObjectMeta: metav1.ObjectMeta{Name: "failing", Namespace: ns}}
	if d := saleNow(t, sale).Status.Delivery; d == nil || d.Summary != "12 pending" || d.Webhooks[0].Pending != 12 {
		t.Fatalf("status.delivery %+v", d)
	}
	// Failing for 30 s: no Warning yet; at a minute, one.
	if err := findEvent(t, ns, "WebhookFailing"); err == nil {
		t.Fatal("a Warning before the endpoint failed for a minute")
	}
	testservers.Eventually(t, 60*time.Second, 200*time.Millisecond, "Warning WebhookFailing", func() error {
		return findEvent(t, ns, "WebhookFailing")
	})
	if time.Since(since.Time) < WebhookFailingAfter {
		t.Fatalf("the Warning came %s into the failing run, before %s", time.Since(since.Time), WebhookFailingAfter)
	}
}

// urlSecretRef may name any Secret key of the namespace, including ones the
// sale's author may not read (another sale's CA key, another team's
// token-bearing URL). Whatever it holds, none of it is repeated in what
// the author can read: the WebhooksReady condition, the sale's events, the
// error the purchase pods report from the webhooks file.
func TestWebhooks_URLSecretNeverEchoed_StatusEventsFile(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	createSale(t, ns, "victim")
	ca := &corev1.Secret{}
	testservers.Eventually(t, 10*time.Second, poll, "victim CA", func() error { return get(t, ns, "victim-ca", ca) })
	// A piece of this key's own material: the end of its PEM body (its
	// start is the same for every P-256 key).
	lines := strings.Fields(string(ca.Data[specs.SecretKeyCAKey]))
	if len(lines) < 8 || !strings.HasPrefix(lines[len(lines)-3], "-----END") {
		t.Fatalf("ca.key is not PEM: %q", lines)
	}
	body := lines[len(lines)-4]
	keyPiece := body[len(body)-16:]
	const token = "T0AAA/B0BBB/s3cr3t-t0ken"
	hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns},
		StringData: map[string]string{"url": "https://hooks.example.com/services/" + token + "%zz"}}
	if err := k8s.Create(ctx, hook); err != nil {
		t.Fatal(err)
	}
	events := []salesv1alpha1.WebhookEvent{salesv1alpha1.EventOrderConfirmed}
	sale := createSale(t, ns, "thief", func(s *salesv1alpha1.FlashSale) {
		s.Spec.Delivery = &salesv1alpha1.DeliverySpec{Webhooks: []salesv1alpha1.WebhookSpec{
			{Name: "key", URLSecretRef: ref("victim-ca", specs.SecretKeyCAKey), Events: events},
			{Name: "token", URLSecretRef: ref("hook", "url"), Events: events},
		}}
	})
	leaks := func(where, text string) {
		t.Helper()
		for _, secret := range []string{keyPiece, "PRIVATE KEY", "s3cr3t-t0ken", "%zz"} {
			if strings.Contains(text, secret) {
				t.Errorf("%s repeats the Secret (%q): %.300s", where, secret, text)
			}
		}
	}
	testservers.Eventually(t, 10*time.Second, poll, "WebhooksReady False for both", func() error {
		c := meta.FindStatusCondition(saleNow(t, sale).Status.Conditions, salesv1alpha1.ConditionWebhooksReady)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "key:") || !strings.Contains(c.Message, "token:") {
			return fmt.Errorf("%+v", c)
		}
		leaks("the WebhooksReady condition", c.Message)
		return nil
	})
	f, err := webhooksFile(t, ns, "thief")
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Webhooks) != 2 {
		t.Fatalf("webhooks file: %+v", f)
	}
	for _, w := range f.Webhooks {
		if w.Error == "" || w.URL != "" {
			t.Errorf("webhook %s resolved: %+v", w.Name, w)
		}
		leaks("the webhooks file's error of "+w.Name, w.Error)
	}
	list := &eventsv1.EventList{}
	if err := k8s.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		leaks("event "+e.Reason, e.Note)
	}
}
