// Package webhook serves replicant's mutating admission webhook for StatefulSets. It
// decodes the request, calls inject.Mutate and lets controller-runtime compute the
// JSON patch; every decision (what to inject, what to refuse) lives in package inject.
package webhook

import (
	"context"
	"encoding/json"
	"net/http"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/replicant-dev/replicant/inject"
)

// Path is where the API server sends StatefulSet admission reviews; the
// MutatingWebhookConfiguration in manifests/ and the chart name it.
const Path = "/mutate-apps-v1-statefulset"

// Injector is the admission handler.
type Injector struct {
	Config  inject.Config
	decoder admission.Decoder
}

// NewInjector returns a handler that injects with cfg.
func NewInjector(decoder admission.Decoder, cfg inject.Config) *Injector {
	return &Injector{Config: cfg, decoder: decoder}
}

// Register mounts the handler on a controller-runtime webhook server.
func Register(server webhook.Server, decoder admission.Decoder, cfg inject.Config) {
	server.Register(Path, &webhook.Admission{Handler: NewInjector(decoder, cfg)})
}

// Handle implements admission.Handler.
func (h *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	sts := &appsv1.StatefulSet{}
	if err := h.decoder.Decode(req, sts); err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	mutated, warnings, err := inject.Mutate(sts, h.Config)
	if err != nil {
		log.FromContext(ctx).Info("refused", "statefulset", req.Namespace+"/"+req.Name, "operation", req.Operation, "reason", err.Error())
		return admission.Denied("replicant: " + err.Error())
	}
	raw, err := json.Marshal(mutated)
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	resp := admission.PatchResponseFromRaw(req.Object.Raw, raw)
	// kubectl prints these ("Warning: ..."); the object is stored all the same.
	resp.Warnings = warnings
	if len(resp.Patches) > 0 {
		msg := "injected"
		if !inject.Enabled(mutated) {
			msg = "removed injection"
		}
		log.FromContext(ctx).Info(msg, "statefulset", req.Namespace+"/"+req.Name, "operation", req.Operation,
			"injected", mutated.Spec.Template.Annotations[inject.AnnInjected], "dryRun", req.DryRun != nil && *req.DryRun)
	}
	return resp
}
