package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// cliFlags are orchestrator-client's flags plus kubectl's.
type cliFlags struct {
	kubeconfig, context, namespace string
	allNamespaces                  bool
	alias, instanceName, dest      string
	output                         string
	timeout                        time.Duration
	timeoutSet                     bool
	noWait                         bool
}

// cli is one invocation: a Kubernetes client and the flags. It speaks only to the
// Kubernetes API: requests are annotations the controller carries out.
type cli struct {
	f   *cliFlags
	c   client.Client
	ns  string // the namespace to look in; "" with -A
	out io.Writer
}

func (f *cliFlags) connect(out io.Writer) (*cli, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if f.kubeconfig != "" {
		rules.ExplicitPath = f.kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.context}
	if f.namespace != "" {
		overrides.Context.Namespace = f.namespace
	}
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no Kubernetes configuration: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, err
	}
	if f.allNamespaces {
		ns = ""
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &cli{f: f, c: c, ns: ns, out: out}, nil
}

// explain turns API errors into something a person can act on.
func explain(err error, verb, resource, namespace string) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("no permission to %s %s in namespace %q (ask for RBAC on it): %v", verb, resource, namespace, err)
	}
	return err
}

// cluster is one managed StatefulSet with its pods.
type cluster struct {
	sts  *appsv1.StatefulSet
	pods []corev1.Pod
}

func (k cluster) alias() string { return k.sts.Name + "." + k.sts.Namespace }

func (k cluster) instanceName(pod string) string {
	return fmt.Sprintf("%s.%s.%s:3306", pod, k.sts.Spec.ServiceName, k.sts.Namespace)
}

func (k cluster) master() string { return k.sts.Annotations[inject.AnnMaster] }

func (k cluster) instances() []instance {
	var out []instance
	for _, p := range k.pods {
		var st failover.PodStatus
		_ = json.Unmarshal([]byte(p.Annotations[inject.AnnStatus]), &st)
		out = append(out, instance{Name: k.instanceName(p.Name), Pod: p.Name, Master: p.Name == k.master(),
			Healthy: p.Labels[inject.LabelHealthy] == "yes", Detached: p.Annotations[inject.AnnDetached] == "true", Status: st})
	}
	return out
}

func (c *cli) clusters(ctx context.Context) ([]cluster, error) {
	list := &appsv1.StatefulSetList{}
	if err := c.c.List(ctx, list, client.InNamespace(c.ns), client.MatchingLabels{inject.LabelInject: inject.InjectEnabled}); err != nil {
		return nil, explain(err, "list", "statefulsets", c.ns)
	}
	var out []cluster
	for i := range list.Items {
		sts := &list.Items[i]
		pods := &corev1.PodList{}
		if err := c.c.List(ctx, pods, client.InNamespace(sts.Namespace), client.MatchingLabels{inject.LabelCluster: sts.Name}); err != nil {
			return nil, explain(err, "list", "pods", sts.Namespace)
		}
		sort.Slice(pods.Items, func(a, b int) bool { return pods.Items[a].Name < pods.Items[b].Name })
		out = append(out, cluster{sts: sts, pods: pods.Items})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].alias() < out[b].alias() })
	return out, nil
}

// find resolves -a ALIAS or -i INSTANCE to a cluster (and the instance's pod).
func (c *cli) find(ctx context.Context) (cluster, string, error) {
	all, err := c.clusters(ctx)
	if err != nil {
		return cluster{}, "", err
	}
	var known []string
	for _, k := range all {
		known = append(known, k.alias())
		if c.f.alias != "" && k.alias() == c.f.alias {
			return k, "", nil
		}
		if c.f.instanceName != "" {
			for _, p := range k.pods {
				if k.instanceName(p.Name) == c.f.instanceName || strings.TrimSuffix(c.f.instanceName, ":3306") == strings.TrimSuffix(k.instanceName(p.Name), ":3306") {
					return k, p.Name, nil
				}
			}
		}
	}
	switch {
	case c.f.alias != "":
		return cluster{}, "", fmt.Errorf("unknown cluster alias %q; known: %s", c.f.alias, strings.Join(known, ", "))
	case c.f.instanceName != "":
		return cluster{}, "", fmt.Errorf("instance %q is not in any replicant cluster (instances are <pod>.<service>.<namespace>:3306); clusters: %s",
			c.f.instanceName, strings.Join(known, ", "))
	}
	return cluster{}, "", errors.New("name a cluster with -a ALIAS (<statefulset>.<namespace>) or an instance with -i INSTANCE")
}

// podOf resolves -d DESTINATION (an instance name or a pod name) in k.
func (k cluster) podOf(dest string) (string, error) {
	for _, p := range k.pods {
		if dest == p.Name || dest == k.instanceName(p.Name) || dest == strings.TrimSuffix(k.instanceName(p.Name), ":3306") {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("instance %q is not in cluster %s", dest, k.alias())
}

// request writes a request annotation (on the StatefulSet, or on a pod) and, unless
// --no-wait, waits until the controller reports the outcome in last-operation.
func (c *cli) request(ctx context.Context, k cluster, obj client.Object, key, value, op string) (failover.Operation, error) {
	before := k.sts.Annotations[inject.AnnLastOperation]
	patch := client.MergeFrom(obj.DeepCopyObject().(client.Object))
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[key] = value
	obj.SetAnnotations(ann)
	if err := c.c.Patch(ctx, obj, patch); err != nil {
		return failover.Operation{}, explain(err, "patch", strings.ToLower(obj.GetObjectKind().GroupVersionKind().Kind)+"s", k.sts.Namespace)
	}
	if c.f.noWait {
		return failover.Operation{Op: op, Result: "requested"}, nil
	}
	fmt.Fprintf(c.out, "waiting for the replicant controller to carry out %s...\n", op)
	deadline := time.Now().Add(c.f.timeout)
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		sts := &appsv1.StatefulSet{}
		if err := c.c.Get(ctx, client.ObjectKeyFromObject(k.sts), sts); err != nil {
			return failover.Operation{}, explain(err, "get", "statefulsets", k.sts.Namespace)
		}
		if now := sts.Annotations[inject.AnnLastOperation]; now != before {
			var result failover.Operation
			if err := json.Unmarshal([]byte(now), &result); err == nil && result.Op == op {
				return result, nil
			}
		}
	}
	return failover.Operation{}, fmt.Errorf("the request was not picked up within %s: is the replicant controller running? (%s is still set)", c.f.timeout, key)
}

// ask writes a request, waits for it, and reports its outcome.
func (c *cli) ask(ctx context.Context, k cluster, obj client.Object, key, value, op string) error {
	result, err := c.request(ctx, k, obj, key, value, op)
	if err != nil {
		return err
	}
	return c.outcome(k, result)
}

// outcome prints what the controller reported and fails on anything but ok.
func (c *cli) outcome(k cluster, op failover.Operation) error {
	switch op.Result {
	case failover.ResultOK:
		if op.Target != "" && op.Op != failover.OpResetReplica {
			fmt.Fprintln(c.out, k.instanceName(op.Target))
		}
		if op.WritesBlockedMs > 0 {
			fmt.Fprintf(c.out, "writes blocked %d ms\n", op.WritesBlockedMs)
		}
		return nil
	case "requested":
		return nil
	}
	return fmt.Errorf("%s %s: %s", op.Op, op.Result, op.Message)
}

func newCLICommands(f *cliFlags) []*cobra.Command {
	run := func(fn func(ctx context.Context, c *cli) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			f.timeoutSet = cmd.Flags().Changed("timeout")
			c, err := f.connect(cmd.OutOrStdout())
			if err != nil {
				return err
			}
			return fn(cmd.Context(), c)
		}
	}
	verb := func(use, short string, fn func(ctx context.Context, c *cli) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs, GroupID: "cli", RunE: run(fn)}
	}
	return []*cobra.Command{
		verb("clusters", "List clusters, each by its master instance", func(ctx context.Context, c *cli) error {
			all, err := c.clusters(ctx)
			for _, k := range all {
				if m := k.master(); m != "" {
					fmt.Fprintln(c.out, k.instanceName(m))
				}
			}
			return err
		}),
		verb("clusters-alias", "List clusters as instance,alias", func(ctx context.Context, c *cli) error {
			all, err := c.clusters(ctx)
			for _, k := range all {
				if m := k.master(); m != "" {
					fmt.Fprintf(c.out, "%s,%s\n", k.instanceName(m), k.alias())
				}
			}
			return err
		}),
		verb("topology", "Show a cluster's servers (-a ALIAS or -i INSTANCE) as orchestrator does", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			switch c.f.output {
			case "json":
				enc := json.NewEncoder(c.out)
				enc.SetIndent("", "  ")
				return enc.Encode(k.instances())
			case "wide":
				fmt.Fprint(c.out, formatWide(k.instances()))
				return nil
			case "":
				fmt.Fprint(c.out, formatTopology(k.instances()))
				return nil
			}
			return fmt.Errorf("output %q: allowed: json, wide", c.f.output)
		}),
		verb("backup", "Back a cluster (-a ALIAS) up now, to its bucket, and wait for it (a Job like the schedule's)", takeBackup),
		verb("backups", "List a cluster's committed backups (-a ALIAS) from its bucket, with your own credentials", listBackups),
		verb("which-master", "Print the cluster's master instance", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			if k.master() == "" {
				return fmt.Errorf("cluster %s has no master yet", k.alias())
			}
			fmt.Fprintln(c.out, k.instanceName(k.master()))
			return nil
		}),
		verb("which-replicas", "Print the cluster's replica instances", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			for _, p := range k.pods {
				if p.Name != k.master() {
					fmt.Fprintln(c.out, k.instanceName(p.Name))
				}
			}
			return nil
		}),
		verb("graceful-master-takeover", "Hand the master role to -d DESTINATION gracefully", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			dest := c.f.dest
			if dest == "" {
				var replicas []string
				for _, p := range k.pods {
					if p.Name != k.master() {
						replicas = append(replicas, p.Name)
					}
				}
				if len(replicas) != 1 {
					return fmt.Errorf("GracefulMasterTakeover: target instance not indicated, auto=false, and master %s has %d replicas. orchestrator cannot choose where to failover to. Aborting",
						k.instanceName(k.master()), len(replicas))
				}
				dest = replicas[0]
			}
			pod, err := k.podOf(dest)
			if err != nil {
				return err
			}
			return c.ask(ctx, k, k.sts, inject.AnnTakeoverTo, pod, failover.OpTakeover)
		}),
		verb("force-master-failover", "Fail over now to the most advanced replica, even if the master looks alive", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			return c.ask(ctx, k, k.sts, inject.AnnFailoverTo, "any", failover.OpForcedFailover)
		}),
		verb("force-master-takeover", "Fail over now to -d DESTINATION, even if the master looks alive", func(ctx context.Context, c *cli) error {
			k, _, err := c.find(ctx)
			if err != nil {
				return err
			}
			if c.f.dest == "" {
				return errors.New("force-master-takeover needs -d DESTINATION")
			}
			pod, err := k.podOf(c.f.dest)
			if err != nil {
				return err
			}
			return c.ask(ctx, k, k.sts, inject.AnnFailoverTo, pod, failover.OpForcedFailover)
		}),
		verb("reset-replica", "Detach a replica (-i INSTANCE): it stops replicating and stays out of the Services", func(ctx context.Context, c *cli) error {
			k, pod, err := c.find(ctx)
			if err != nil {
				return err
			}
			if pod == "" {
				return errors.New("reset-replica needs -i INSTANCE")
			}
			for i := range k.pods {
				if k.pods[i].Name == pod {
					return c.ask(ctx, k, &k.pods[i], inject.AnnResetReplica, "true", failover.OpResetReplica)
				}
			}
			return fmt.Errorf("instance %s vanished", c.f.instanceName)
		}),
	}
}

// orchestratorArgs accepts orchestrator-client's spelling: `-c COMMAND` anywhere
// becomes the subcommand, so `replicant -c topology -a db.default` works.
func orchestratorArgs(args []string) []string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		var command string
		switch {
		case (a == "-c" || a == "--command") && i+1 < len(args):
			command = args[i+1]
			args = append(append([]string{}, args[:i]...), args[i+2:]...)
		case strings.HasPrefix(a, "--command="):
			command = strings.TrimPrefix(a, "--command=")
			args = append(append([]string{}, args[:i]...), args[i+1:]...)
		default:
			continue
		}
		return append([]string{command}, args...)
	}
	return args
}
