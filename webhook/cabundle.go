package webhook

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// CABundleKeeper keeps the CA that signed the webhook's serving certificate (ca.crt in
// the certificate directory, as cert-manager writes it) in the MutatingWebhookConfiguration.
//
// Why not cert-manager's cainjector: it rewrites the whole object with the types it
// was built with, and the cert-manager buildable here (v1.11, Kubernetes 1.26 types)
// drops the configuration's matchConditions, which keep the manager's own writes out
// of the webhook. The keeper updates only caBundle, with the current types.
type CABundleKeeper struct {
	Client client.Client
	// Reader reads the configuration uncached (no cluster-wide watch is needed).
	Reader client.Reader
	// Name is the MutatingWebhookConfiguration (replicant).
	Name string
	// CAFile is the CA certificate (<webhook cert dir>/ca.crt).
	CAFile string
	// Every is how often it checks (default 30s): cert-manager renews the certificate,
	// and the CA with it when the CA is renewed.
	Every time.Duration
}

// NeedLeaderElection: one writer is enough.
func (k *CABundleKeeper) NeedLeaderElection() bool { return true }

// Start keeps the bundle until ctx ends.
func (k *CABundleKeeper) Start(ctx context.Context) error {
	if k.Every == 0 {
		k.Every = 30 * time.Second
	}
	logger := log.FromContext(ctx).WithName("ca-bundle")
	t := time.NewTicker(k.Every)
	defer t.Stop()
	for {
		if changed, err := k.Sync(ctx); err != nil {
			logger.Error(err, "keeping the webhook's CA bundle", "configuration", k.Name)
		} else if changed {
			logger.Info("webhook CA bundle updated", "configuration", k.Name)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Sync puts the CA into every webhook of the configuration; it reports whether it
// changed anything. A missing CA file or configuration is no error (not there yet).
func (k *CABundleKeeper) Sync(ctx context.Context) (bool, error) {
	ca, err := os.ReadFile(k.CAFile)
	if os.IsNotExist(err) || (err == nil && len(bytes.TrimSpace(ca)) == 0) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", k.CAFile, err)
	}
	cfg := &admissionv1.MutatingWebhookConfiguration{}
	if err := k.Reader.Get(ctx, client.ObjectKey{Name: k.Name}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, ca) {
			cfg.Webhooks[i].ClientConfig.CABundle = ca
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	return true, k.Client.Update(ctx, cfg)
}
