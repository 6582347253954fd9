package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/valyala/fasthttp"

	salesv1alpha1 "github.com/flux-order/flux-order/api/v1alpha1"
)

// webhook is one endpoint as the pod delivers to it: the resolved entry
// of the operator's file, its HTTP client, and its problem if it cannot
// be delivered to (events then wait, pending).
type webhook struct {
	salesv1alpha1.ResolvedWebhook
	client *fasthttp.HostClient
	// timeout bounds each attempt (Config.AttemptTimeout).
	timeout time.Duration
	problem string
}

func (w *webhook) wants(eventType string) bool {
	return slices.Contains(w.Events, salesv1alpha1.WebhookEvent(eventType))
}

// settings are the webhooks of one version of the file.
type settings struct {
	raw           []byte
	hooks         map[string]*webhook
	redeliverDead string
}

// loadSettings reads the operator's file (api/v1alpha1.WebhooksFile). A
// missing file is no webhooks (a pod run outside Kubernetes without
// --webhooks-file, or before the operator wrote the Secret).
func loadSettings(path string, timeout time.Duration, workers int, conns *connSet) (*settings, error) {
	raw, err := readSettings(path)
	if err != nil {
		return nil, err
	}
	return parseSettings(path, raw, timeout, workers, conns)
}

func readSettings(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return []byte(`{"webhooks":[]}`), nil
	}
	return raw, err
}

// parseSettings builds the webhooks of the file's bytes raw, each with its
// client.
func parseSettings(path string, raw []byte, timeout time.Duration, workers int, conns *connSet) (*settings, error) {
	var f salesv1alpha1.WebhooksFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("webhooks file %s: %w", path, err)
	}
	s := &settings{raw: raw, hooks: map[string]*webhook{}, redeliverDead: f.RedeliverDead}
	for _, rw := range f.Webhooks {
		w := &webhook{ResolvedWebhook: rw, timeout: timeout, problem: rw.Error}
		if w.problem == "" {
			w.problem = salesv1alpha1.CheckWebhookURL(rw.URL, rw.InsecureHTTP)
		}
		if w.problem == "" {
			var err error
			if w.client, err = newClient(rw.URL, rw.CA, timeout, workers, conns); err != nil {
				w.problem = err.Error()
			}
		}
		s.hooks[rw.Name] = w
	}
	return s, nil
}

// follow re-reads the file every interval and swaps the settings when its
// bytes changed (the kubelet replaces a mounted Secret's files in place),
// and sets the outbox's switch from them (outboxswitch.go).
func (d *Deliverer) follow(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The clients are built only when the bytes changed.
		raw, err := readSettings(d.cfg.File)
		var s *settings
		if err == nil && !bytes.Equal(raw, d.settings.Load().raw) {
			s, err = parseSettings(d.cfg.File, raw, d.cfg.AttemptTimeout, d.cfg.Workers, d.conns)
		}
		if err != nil {
			d.log.Warn("webhooks file unreadable; keeping the previous webhooks", "err", err)
		} else if s != nil {
			d.settings.Store(s)
			d.log.Info("webhooks changed", "webhooks", len(s.hooks))
			d.redeliver(ctx, s.redeliverDead)
		}
		// Every tick: a pod with a webhook keeps the switch on (its
		// stamp), one without turns it off once nobody has stamped it
		// for OutboxOffAfter.
		d.setSwitch(ctx)
	}
}

// Webhooks is how many webhooks this pod's file lists now.
func (d *Deliverer) Webhooks() int { return len(d.settings.Load().hooks) }

func (d *Deliverer) logProblems(s *settings) {
	for name, w := range s.hooks {
		if w.problem != "" {
			d.log.Warn("webhook cannot be delivered to; its events wait", "webhook", name, "problem", w.problem)
		}
	}
}
