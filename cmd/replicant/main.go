// Command replicant is the one binary of the project: the manager (admission webhook
// and controller), the steps that run inside the database pods (sidecar ...), and the
// orchestrator-client style CLI verbs.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := newRootCommand().Execute(); err != nil {
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
		&cobra.Group{ID: "server", Title: "Running replicant:"},
	)
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
