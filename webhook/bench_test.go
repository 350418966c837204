package webhook_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/replicant-dev/replicant/test/fixture"
	"github.com/replicant-dev/replicant/webhook"
)

// BenchmarkAdmission measures one StatefulSet admission in-process and end to end: an
// AdmissionReview body decoded by controller-runtime's HTTP handler, the mutation, the
// JSON patch computed and the response encoded. It reports the p99 (goal: <= 5 ms).
func BenchmarkAdmission(b *testing.B) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		b.Fatal(err)
	}
	handler := &crwebhook.Admission{Handler: webhook.NewInjector(admission.NewDecoder(scheme), injectConfig)}
	sts := fixture.StatefulSet("apps", "probe")
	sts.TypeMeta = metav1.TypeMeta{APIVersion: "apps/v1", Kind: "StatefulSet"}
	raw, err := json.Marshal(sts)
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "bench",
			Kind:      metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "StatefulSet"},
			Resource:  metav1.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"},
			Namespace: sts.Namespace, Name: sts.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	})
	if err != nil {
		b.Fatal(err)
	}

	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		r := serve(handler, body)
		durations = append(durations, time.Since(start))
		if r.Code != http.StatusOK {
			b.Fatalf("status %d: %s", r.Code, r.Body)
		}
	}
	b.StopTimer()

	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(serve(handler, body).Body.Bytes(), &review); err != nil || !review.Response.Allowed || len(review.Response.Patch) == 0 {
		b.Fatalf("the benchmarked request was not injected: %v %+v", err, review.Response)
	}
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds()), "p50-µs")
}

func serve(h http.Handler, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	r := httptest.NewRecorder()
	h.ServeHTTP(r, req)
	return r
}
