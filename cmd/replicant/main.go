// Command replicant is the one binary of the project: the manager (admission webhook
// and controller), the steps that run inside the database pods (sidecar ...), and the
// orchestrator-client style CLI verbs.
package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	root := newRootCommand()
	root.SetArgs(orchestratorArgs(os.Args[1:]))
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "replicant:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "replicant",
		Short: "Turns a MariaDB StatefulSet into a managed, replicated cluster",
		Long: `replicant turns a plain MariaDB StatefulSet into a managed, replicated cluster.

Label a StatefulSet replicant.dev/inject=enabled; the manager's admission webhook
injects the steps below into its pods, and its controller wires GTID replication,
keeps the <sts>-master and <sts>-replicas Services right, and fails over.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddGroup(
		&cobra.Group{ID: "cli", Title: "orchestrator-client verbs (also as -c VERB; kubectl replicant VERB):"},
		&cobra.Group{ID: "server", Title: "Running replicant:"},
	)
	f := &cliFlags{}
	for _, verb := range newCLICommands(f) {
		fl := verb.Flags()
		fl.StringVar(&f.kubeconfig, "kubeconfig", "", "path to the kubeconfig file")
		fl.StringVar(&f.context, "context", "", "the kubeconfig context to use")
		fl.StringVarP(&f.namespace, "namespace", "n", "", "namespace (default: the context's)")
		fl.BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "look in every namespace")
		fl.StringVarP(&f.alias, "alias", "a", "", "cluster alias: <statefulset>.<namespace>")
		fl.StringVarP(&f.instanceName, "instance", "i", "", "instance: <pod>.<service>.<namespace>:3306")
		fl.StringVarP(&f.dest, "destination", "d", "", "destination instance of a takeover")
		fl.StringVarP(&f.output, "output", "o", "", "output format: json (topology)")
		fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "how long to wait for the controller to carry out a request")
		fl.BoolVar(&f.noWait, "no-wait", false, "write the request and return at once")
		if verb.Name() == "backup" {
			verb.AddCommand(newBackupRunCommand())     // backup run: what the Job runs
			verb.AddCommand(newBackupBinlogsCommand()) // backup binlogs: what the archive Job runs
		}
		root.AddCommand(verb)
	}
	manager := newManagerCommand()
	manager.GroupID = "server"
	sidecar := newSidecarCommand()
	sidecar.GroupID = "server"
	root.AddCommand(manager, sidecar, newVersionCommand())
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of replicant",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), version)
		},
	}
}
