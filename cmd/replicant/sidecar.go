package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/sidecar"
)

// serverOptions are the StatefulSet annotations the pod-side steps need; the webhook
// passes them as flags (see package inject).
type serverOptions struct {
	flavor         string
	serverIDOffset int64
	durability     string
}

func (o *serverOptions) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.flavor, "flavor", "mariadb", "server flavor: mariadb or mysql")
	cmd.Flags().Int64Var(&o.serverIDOffset, "server-id-offset", 100, "server_id = offset + the pod's ordinal")
	cmd.Flags().StringVar(&o.durability, "durability", "semi-sync", "semi-sync or async")
}

const notYet = "is not in this release of replicant yet: it arrives with the sidecar release (issue 3); the webhook injects it already so that the pod template stays stable"

func newSidecarCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Steps that run inside the database pods (injected by the webhook)",
	}
	var dest string
	install := &cobra.Command{
		Use:   "install",
		Short: "Copy this binary into the pod's shared volume (init container replicant-install)",
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return sidecar.Install(dest) },
	}
	install.Flags().StringVar(&dest, "dest", "/replicant/bin", "directory to copy the replicant binary into")

	var configOpts serverOptions
	var confDir, userConfDir string
	config := &cobra.Command{
		Use:   "config",
		Short: "Write the server's my.cnf fragment (init container replicant-config)",
		Long: `Fill the directory the server includes as conf.d: the image's own conf.d files, then
the user's (--user-conf-dir), then replicant's fragment ` + sidecar.FragmentName + `
(server_id = offset + ordinal, binlog + log_slave_updates in ROW format, strict GTID,
read_only=ON, skip_slave_start, report_host <pod>.<service>.<namespace>, stable
binlog/relay log names, semi-sync). Reads POD_NAME, POD_NAMESPACE, REPLICANT_SERVICE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c := sidecar.ServerConfig{
				PodName: os.Getenv("POD_NAME"), Namespace: os.Getenv("POD_NAMESPACE"), Service: os.Getenv("REPLICANT_SERVICE"),
				Flavor: configOpts.flavor, ServerIDOffset: configOpts.serverIDOffset, Durability: configOpts.durability,
			}
			if c.PodName == "" || c.Namespace == "" || c.Service == "" {
				return fmt.Errorf("POD_NAME, POD_NAMESPACE and REPLICANT_SERVICE must be set (the webhook injects them)")
			}
			files, err := sidecar.WriteConfig(c, confDir, inject.ConfDir, userConfDir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "config: wrote %s into %s (report_host %s)\n", strings.Join(files, ", "), confDir, c.ReportHost())
			return nil
		},
	}
	configOpts.bind(config)
	config.Flags().StringVar(&confDir, "conf-dir", "/replicant/conf", "directory the server includes as conf.d")
	config.Flags().StringVar(&userConfDir, "user-conf-dir", "", "the user's own conf.d volume, copied in first")

	var cloneOpts serverOptions
	var cloneDatadir, initURI string
	clone := &cobra.Command{
		Use:   "clone",
		Short: "Fill an empty datadir from a replica, the master or a backup (init container replicant-clone) [not in this release yet]",
		Long: `Decide whether this pod needs data and from where: data present -> keep it; a healthy
replica -> clone from <sts>-replicas; else the master -> clone from <sts>-master; else
init-uri -> restore; else ordinal 0 -> start empty; else fail so Kubernetes retries.
This step ` + notYet + `.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return fmt.Errorf("sidecar clone %s", notYet) },
	}
	cloneOpts.bind(clone)
	clone.Flags().StringVar(&cloneDatadir, "datadir", "/var/lib/mysql", "the server's datadir")
	clone.Flags().StringVar(&initURI, "init-uri", "", "backup to restore when no server can be cloned")

	var serveOpts serverOptions
	var serveDatadir, listen string
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve /xbackup, /healthz, /readyz and /metrics on :8080 (container replicant-sidecar) [not in this release yet]",
		Long:  `Serve consistent physical backups of the local server to cloning peers, and health and metrics. This step ` + notYet + `.`,
		Args:  cobra.NoArgs,
		RunE:  func(*cobra.Command, []string) error { return fmt.Errorf("sidecar serve %s", notYet) },
	}
	serveOpts.bind(serve)
	serve.Flags().StringVar(&serveDatadir, "datadir", "/var/lib/mysql", "the server's datadir")
	serve.Flags().StringVar(&listen, "listen", ":8080", "address to serve on")

	cmd.AddCommand(install, config, clone, serve)
	return cmd
}
