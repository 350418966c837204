package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/webhook"
)

type managerFlags struct {
	kubeconfig              string
	metricsAddr             string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	webhookHost             string
	webhookPort             int
	webhookCertDir          string
	webhookConfiguration    string
	image                   string
	imagePullPolicy         string
	probeInterval           time.Duration
	writeLease              time.Duration
	rolloutStallAfter       time.Duration
	namespaces              []string
	sourceAddressing        string
}

func newManagerCommand() *cobra.Command {
	f := managerFlags{}
	zapOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the admission webhook and the controller (in the replicant Deployment)",
		Long: `Run the manager: the mutating admission webhook that injects replicant into labelled
StatefulSets, and (from the controller's release on) the controller that runs their
replication. Two replicas are safe: --leader-elect lets one act at a time, and both
serve the webhook.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			return runManager(ctrl.SetupSignalHandler(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty: in-cluster config, then $KUBECONFIG, then ~/.kube/config")
	fl.StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (plain HTTP); 0 turns it off")
	fl.StringVar(&f.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fl.BoolVar(&f.leaderElect, "leader-elect", false, "elect one active manager among replicas")
	fl.StringVar(&f.leaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease (default: the pod's)")
	fl.StringVar(&f.webhookHost, "webhook-host", "", "address the webhook server binds to (default: all)")
	fl.IntVar(&f.webhookPort, "webhook-port", 9443, "port of the admission webhook server")
	fl.StringVar(&f.webhookCertDir, "webhook-cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding the webhook's tls.crt and tls.key")
	fl.StringVar(&f.webhookConfiguration, "webhook-configuration", "replicant",
		"the MutatingWebhookConfiguration whose caBundle the manager keeps (from ca.crt in --webhook-cert-dir)")
	fl.StringVar(&f.image, "replicant-image", os.Getenv("REPLICANT_IMAGE"),
		"image injected as replicant-install (default: $REPLICANT_IMAGE, else the image of this pod's manager container, read from the API at start)")
	fl.StringVar(&f.imagePullPolicy, "replicant-image-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the injected replicant image")
	fl.DurationVar(&f.probeInterval, "probe-interval", time.Second, "how often the controller probes every server")
	fl.DurationVar(&f.writeLease, "write-lease", 3*time.Second,
		"how long a master stays writable without the controller renewing its lease (its sidecar then fences it); another server takes writes only after it ran out")
	fl.StringSliceVar(&f.namespaces, "namespaces", nil,
		"namespaces whose StatefulSets the manager watches (comma-separated; default: all); with the chart's watchNamespaces it holds Roles only there")
	fl.DurationVar(&f.rolloutStallAfter, "rollout-stall-after", 10*time.Minute,
		"a pod a rolling update recreated that is not healthy this long after its creation stops the rollout with a RolloutStalled Event (a container that cannot start stops it at once)")
	fl.StringVar(&f.sourceAddressing, "source-addressing", string(failover.SourceReportHost),
		"what replicas replicate from: report-host (<pod>.<service>.<namespace>, follows a pod's new IP through DNS) or pod-ip")
	goFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(goFlags)
	fl.AddGoFlagSet(goFlags)
	return cmd
}

func runManager(ctx context.Context, f managerFlags) error {
	policy := corev1.PullPolicy(f.imagePullPolicy)
	switch policy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return fmt.Errorf("--replicant-image-pull-policy %q: allowed: Always, IfNotPresent, Never", f.imagePullPolicy)
	}
	if f.writeLease != 0 && (f.writeLease < 2*f.probeInterval || f.writeLease > time.Minute) {
		return fmt.Errorf("--write-lease %s: allowed: at least twice --probe-interval (%s, it is renewed every probe) and at most 1m", f.writeLease, f.probeInterval)
	}
	restConfig, err := loadConfig(f.kubeconfig)
	if err != nil {
		return err
	}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		// Cache only replicant's pods and Services, and never Secrets: credentials are
		// read from the API when needed, not held for the whole cluster.
		Cache: failover.CacheOptions(f.namespaces),
		// The manager lives as long as the process: the deprecation (a broadcaster
		// outliving a shorter-lived manager) does not apply.
		EventBroadcaster:        failover.NewEventBroadcaster(), //nolint:staticcheck
		Client:                  client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		Metrics:                 metricsserver.Options{BindAddress: f.metricsAddr},
		HealthProbeBindAddress:  f.probeAddr,
		LeaderElection:          f.leaderElect,
		LeaderElectionID:        "replicant-manager.replicant.dev",
		LeaderElectionNamespace: f.leaderElectionNamespace,
		// The manager stops when it loses the lease, so two replicas never act at once.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Host:    f.webhookHost,
			Port:    f.webhookPort,
			CertDir: f.webhookCertDir,
		}),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	if f.image == "" {
		// Read once, uncached: the image however it was set (kustomize, helm, kubectl set image).
		f.image, err = ownImage(ctx, mgr.GetAPIReader(), os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME"))
		if err != nil {
			return err
		}
	}
	webhook.Register(mgr.GetWebhookServer(), admission.NewDecoder(mgr.GetScheme()), inject.Config{
		Image: f.image, ImagePullPolicy: policy, Version: version,
	})
	if err := mgr.Add(&webhook.CABundleKeeper{Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Name: f.webhookConfiguration,
		CAFile: filepath.Join(f.webhookCertDir, "ca.crt")}); err != nil {
		return err
	}
	addressing := failover.SourceAddressing(f.sourceAddressing)
	if addressing != failover.SourceReportHost && addressing != failover.SourcePodIP {
		return fmt.Errorf("--source-addressing %q: allowed: report-host, pod-ip", f.sourceAddressing)
	}
	if err := (&failover.Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorderFor("replicant"),
		Options: failover.Options{Image: f.image, ImagePullPolicy: policy, ProbeInterval: f.probeInterval, Addressing: addressing, WriteLease: f.writeLease,
			RolloutStallAfter: f.rolloutStallAfter},
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up the controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	// Ready once the webhook server serves TLS, so the Service only routes to it then.
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	ctrl.Log.WithName("setup").Info("starting manager", "version", version, "image", f.image)
	return mgr.Start(ctx)
}

// managerContainer is the name of the manager's container in manifests/ and the chart.
const managerContainer = "manager"

// ownImage returns the image of the manager container of the pod the manager runs in.
func ownImage(ctx context.Context, c client.Reader, namespace, name string) (string, error) {
	if namespace == "" || name == "" {
		return "", fmt.Errorf("no --replicant-image given and POD_NAMESPACE/POD_NAME are not set: cannot tell which image to inject")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pod := &corev1.Pod{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pod); err != nil {
		return "", fmt.Errorf("read own pod %s/%s to learn the image to inject (or pass --replicant-image): %w", namespace, name, err)
	}
	for _, ctr := range pod.Spec.Containers {
		if ctr.Name == managerContainer {
			return ctr.Image, nil
		}
	}
	return "", fmt.Errorf("own pod %s/%s has no container named %q: pass --replicant-image", namespace, name, managerContainer)
}

func loadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration (in-cluster, $KUBECONFIG or ~/.kube/config): %w", err)
	}
	return cfg, nil
}
