package webhook_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/webhook"
)

// TestCABundleKeeperFillsTheBundleAndKeepsMatchConditions: the shipped configuration,
// created without a CA, gets the CA from the certificate directory; its
// matchConditions stay (cert-manager v1.11's cainjector would drop them).
func TestCABundleKeeperFillsTheBundleAndKeepsMatchConditions(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := shippedWebhookConfiguration(t)
	if err := env.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keeper := &webhook.CABundleKeeper{Client: env.Client, Reader: env.Client, Name: cfg.Name, CAFile: filepath.Join(dir, "ca.crt")}
	if changed, err := keeper.Sync(ctx); err != nil || changed {
		t.Fatalf("without a CA file: changed %v, %v", changed, err)
	}
	if err := os.WriteFile(keeper.CAFile, env.WebhookCA, 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := keeper.Sync(ctx); err != nil || !changed {
		t.Fatalf("with a CA file: changed %v, %v", changed, err)
	}
	got := &admissionv1.MutatingWebhookConfiguration{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: cfg.Name}, got); err != nil {
		t.Fatal(err)
	}
	w := got.Webhooks[0]
	if !bytes.Equal(w.ClientConfig.CABundle, env.WebhookCA) {
		t.Errorf("caBundle not set")
	}
	if len(w.MatchConditions) != 1 || w.MatchConditions[0].Name != "not-the-manager" {
		t.Errorf("matchConditions = %+v", w.MatchConditions)
	}
	if changed, err := keeper.Sync(ctx); err != nil || changed {
		t.Errorf("a second sync: changed %v, %v (want nothing to do)", changed, err)
	}
}
