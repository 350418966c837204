package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/replicant-dev/replicant/backup"
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

// serverConfig is the fragment's input for this pod: the options, and the pod's
// names from the environment the webhook injects.
func (o *serverOptions) serverConfig() sidecar.ServerConfig {
	return sidecar.ServerConfig{
		PodName: os.Getenv("POD_NAME"), Namespace: os.Getenv("POD_NAMESPACE"), Service: os.Getenv("REPLICANT_SERVICE"),
		Flavor: o.flavor, ServerIDOffset: o.serverIDOffset, Durability: o.durability,
	}
}

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
			c := configOpts.serverConfig()
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
	var cloneConfDir string
	cloneCfg := sidecar.CloneConfig{}
	var restoreTo string
	clone := &cobra.Command{
		Use:   "clone",
		Short: "Fill an empty datadir from a replica or the master (init container replicant-clone)",
		Long: `Decide whether this pod needs data and from where, logging each decision:
data present -> keep it; a healthy replica answers on <sts>-replicas -> clone from it;
else the master answers on <sts>-master -> clone from it; else the master's pod,
at the address the controller's state records, answers -> clone from it (a user's own
Service named <sts>-master need not carry the sidecar's port); else init-uri -> restore
that backup (<dir>/<name>, or <dir>/latest: the newest committed one), its checksum
checked before anything moves, with the bucket's credentials from the environment;
else ordinal 0 -> start empty; else fail so Kubernetes retries.
A clone streams the source's /xbackup into a work directory inside the datadir volume,
prepares it, records the GTID position it ends at (` + sidecar.CloneRecordFile + `)
and only then moves it into place: an interrupted clone never leaves a half datadir.
Reads POD_NAME, POD_NAMESPACE, REPLICANT_STATEFULSET, REPLICANT_BACKUP_USER/PASSWORD.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sts, ns := os.Getenv("REPLICANT_STATEFULSET"), os.Getenv("POD_NAMESPACE")
			cloneCfg.PodName = os.Getenv("POD_NAME")
			if cloneCfg.PodName == "" || sts == "" || ns == "" {
				return fmt.Errorf("POD_NAME, POD_NAMESPACE and REPLICANT_STATEFULSET must be set (the webhook injects them)")
			}
			if cloneCfg.ReplicasURL == "" {
				cloneCfg.ReplicasURL = fmt.Sprintf("http://%s-replicas.%s.svc:%d", sts, ns, inject.SidecarPort)
			}
			if cloneCfg.MasterURL == "" {
				cloneCfg.MasterURL = fmt.Sprintf("http://%s-master.%s.svc:%d", sts, ns, inject.SidecarPort)
			}
			cloneCfg.SidecarPort = inject.SidecarPort
			switch {
			case restoreTo != "" && cloneCfg.InitURI == "":
				return fmt.Errorf("--restore-to needs --init-uri (replicant.dev/restore-to needs replicant.dev/init-uri)")
			case restoreTo != "":
				cloneCfg.Restore, cloneCfg.Replay = backup.PointInTimeRestorer(cloneCfg.InitURI, restoreTo,
					backup.ReplayOptions{Flavor: cloneOpts.flavor, Log: newLogger().WithName("replay")})
			case cloneCfg.InitURI != "":
				cloneCfg.Restore = backup.Restorer(cloneCfg.InitURI, cloneOpts.flavor, newLogger().WithName("restore"))
			}
			cloneCfg.BackupUser, cloneCfg.BackupPassword = os.Getenv("REPLICANT_BACKUP_USER"), os.Getenv("REPLICANT_BACKUP_PASSWORD")
			// A MySQL clone (--flavor mysql) logs in to the donor's server with the
			// replication account and MySQL's CLONE plugin.
			cloneCfg.Flavor = cloneOpts.flavor
			cloneCfg.CloneUser, cloneCfg.ClonePassword = os.Getenv("REPLICANT_REPLICATION_USER"), os.Getenv("REPLICANT_REPLICATION_PASSWORD")
			cloneCfg.Log = newLogger().WithName("clone")
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			decision, err := sidecar.Clone(ctx, cloneCfg)
			if err != nil || decision != sidecar.DecisionStartEmpty {
				return err
			}
			// The image's entrypoint initialises the datadir on a temporary server that
			// reads the same conf.d: the fragment as the flavor needs it for that.
			c := cloneOpts.serverConfig()
			c.ImageInitialises = true
			if err := sidecar.WriteFragment(c, cloneConfDir); err != nil {
				return fmt.Errorf("the fragment for the image's initialisation: %w", err)
			}
			return nil
		},
	}
	cloneOpts.bind(clone)
	clone.Flags().StringVar(&cloneCfg.Datadir, "datadir", "/var/lib/mysql", "the server's datadir")
	clone.Flags().StringVar(&cloneCfg.InitURI, "init-uri", "", "backup to restore when no server can be cloned")
	clone.Flags().StringVar(&restoreTo, "restore-to", "", "with --init-uri: restore to this RFC 3339 time (exclusive) or GTID position (inclusive), the newest backup before it plus the archived binlogs up to it")
	clone.Flags().StringVar(&cloneCfg.StateFile, "state-file", "", "the controller's state of the cluster (pod 0 starts empty only when it names no master)")
	clone.Flags().StringVar(&cloneCfg.ReplicasURL, "replicas-url", "", "sidecars of the healthy replicas (default http://<sts>-replicas.<namespace>.svc:8080)")
	clone.Flags().StringVar(&cloneCfg.MasterURL, "master-url", "", "sidecar of the master (default http://<sts>-master.<namespace>.svc:8080)")
	clone.Flags().StringVar(&cloneConfDir, "conf-dir", inject.ConfDir, "the server's conf.d, where replicant's fragment is (rewritten for an image's initialisation)")
	clone.Flags().DurationVar(&cloneCfg.IdleTimeout, "idle-timeout", 5*time.Minute, "give up a clone whose source sent nothing for this long (its backup is stopped; Kubernetes retries)")

	var serveOpts serverOptions
	serveCfg := sidecar.ServeConfig{}
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve /xbackup, /healthz, /readyz, /status and /metrics on :8080 (container replicant-sidecar)",
		Long: `Serve the local server to its peers: GET /xbackup streams a consistent physical backup
(MariaDB: mariadb-backup --stream=xbstream; MySQL: the server's CLONE LOCAL into
--scratch-dir, streamed as tar) to a cloning pod or a backup, only with the backup credentials,
one at a time; /healthz, /readyz (the server answers), /status (the clone record),
/pre-stop (the server container's preStop hook: returns once the server is read-only),
/metrics (Prometheus). Reads REPLICANT_BACKUP_USER/PASSWORD. Stops cleanly on SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			serveCfg.BackupUser, serveCfg.BackupPassword = os.Getenv("REPLICANT_BACKUP_USER"), os.Getenv("REPLICANT_BACKUP_PASSWORD")
			serveCfg.AdminUser, serveCfg.AdminPassword = os.Getenv("REPLICANT_ADMIN_USER"), os.Getenv("REPLICANT_ADMIN_PASSWORD")
			serveCfg.Flavor = serveOpts.flavor
			serveCfg.Log = newLogger().WithName("sidecar")
			srv, err := sidecar.NewServer(serveCfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return srv.Run(ctx)
		},
	}
	serveOpts.bind(serve)
	serve.Flags().StringVar(&serveCfg.Datadir, "datadir", "/var/lib/mysql", "the server's datadir")
	serve.Flags().StringVar(&serveCfg.Listen, "listen", ":8080", "address to serve on")
	serve.Flags().StringVar(&serveCfg.ServerAddr, "server-addr", "127.0.0.1:3306", "the local server")
	serve.Flags().StringVar(&serveCfg.DefaultsFile, "defaults-file", "", "the server's my.cnf for mariadb-backup (default: its usual search)")
	serve.Flags().StringVar(&serveCfg.ScratchDir, "scratch-dir", "", "MySQL: a directory the server writes and this sidecar reads, for a backup's CLONE LOCAL copy")

	cmd.AddCommand(install, config, clone, serve)
	return cmd
}

// newLogger is the structured logger of the pod-side steps (JSON, to stderr).
func newLogger() logr.Logger { return zap.New() }
