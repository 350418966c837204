package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// newBackupRunCommand is `replicant backup run`: one backup of a cluster, from inside
// the cluster (a Job), to its bucket, then retention.
func newBackupRunCommand() *cobra.Command {
	var uri, retention, sts, ns, terminationLog string
	var opts backup.TakeOptions
	run := &cobra.Command{
		Use:   "run",
		Short: "Take one backup of a cluster now, from inside the cluster, and apply retention",
		Long: `Take one backup: stream /xbackup from a healthy replica's sidecar (the <sts>-replicas
Service; the master's, <sts>-master, only when no replica answers, and logged),
compress it with zstd, upload it to <backup-uri>/<namespace>/<sts>/<UTC time>/ and
commit it by writing its manifest last; then delete what --retention lets go. The
bucket's credentials come from the environment, as the cloud's SDK reads them
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY,
GOOGLE_APPLICATION_CREDENTIALS or the pod's workload identity); the sidecar's from
REPLICANT_BACKUP_USER/REPLICANT_BACKUP_PASSWORD. Prints the manifest as JSON.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uri == "" || sts == "" || ns == "" {
				return fmt.Errorf("--backup-uri, --statefulset and --namespace are required")
			}
			var policy backup.Retention
			if retention != "" {
				var err error
				if policy, err = backup.ParseRetention(retention); err != nil {
					return fmt.Errorf("--retention: %w", err)
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			c, err := backup.OpenCluster(ctx, uri, ns, sts)
			if err != nil {
				return err
			}
			defer c.Close()
			if len(opts.Sources) == 0 {
				opts.Sources = []string{
					fmt.Sprintf("http://%s-replicas.%s.svc:%d", sts, ns, inject.SidecarPort),
					fmt.Sprintf("http://%s-master.%s.svc:%d", sts, ns, inject.SidecarPort),
				}
			}
			opts.Namespace, opts.StatefulSet = ns, sts
			opts.User, opts.Password = os.Getenv("REPLICANT_BACKUP_USER"), os.Getenv("REPLICANT_BACKUP_PASSWORD")
			opts.Log = newLogger().WithName("backup")
			m, err := c.Take(ctx, opts)
			if err != nil {
				err = fmt.Errorf("backup of %s/%s to %s failed: %w", ns, sts, c.Where(), err)
				leaveOutcome(terminationLog, BackupOutcome{Error: err.Error()})
				return err
			}
			outcome := BackupOutcome{Manifest: &m}
			if retention != "" {
				deleted, err := c.Prune(ctx, policy, time.Now())
				if err != nil {
					outcome.Error = fmt.Sprintf("backup %s committed, but retention failed: %v", m.Name, err)
				}
				opts.Log.Info("retention applied", "policy", policy.String(), "deleted", deleted)
				outcome.Pruned = len(deleted)
			}
			leaveOutcome(terminationLog, outcome)
			if outcome.Error != "" {
				return errors.New(outcome.Error)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(m)
		},
	}
	fl := run.Flags()
	fl.StringVar(&uri, "backup-uri", "", "the bucket (replicant.dev/backup-uri)")
	fl.StringVar(&retention, "retention", "", "what to keep (replicant.dev/backup-retention): "+backup.RetentionHelp)
	fl.StringVar(&sts, "statefulset", os.Getenv("REPLICANT_STATEFULSET"), "the cluster's StatefulSet")
	fl.StringVar(&ns, "namespace", os.Getenv("POD_NAMESPACE"), "its namespace")
	fl.StringVar(&terminationLog, "termination-log", "", "a file to leave the outcome in, as JSON (the container's termination message, which the controller reports)")
	fl.StringSliceVar(&opts.Sources, "source", nil, "sidecars to stream from, in order (default <sts>-replicas, then <sts>-master)")
	fl.DurationVar(&opts.IdleTimeout, "idle-timeout", 5*time.Minute, "give up a source that sent nothing for this long")
	fl.StringVar(&opts.Flavor, "flavor", "mariadb", "the servers' flavor (replicant.dev/flavor), recorded in the manifest: mariadb or mysql")
	return run
}

// takeBackup is the CLI verb `backup -a`: one backup now, as a Job like the schedule's
// (owned by the StatefulSet, removed a day after it finished), waited for.
func takeBackup(ctx context.Context, c *cli) error {
	k, _, err := c.find(ctx)
	if err != nil {
		return err
	}
	opts, err := inject.ParseOptions(k.sts)
	if err != nil {
		return err
	}
	if opts.BackupURI == "" {
		return fmt.Errorf("cluster %s has no %s annotation: there is no bucket to back up to", k.alias(), inject.AnnBackupURI)
	}
	image, policy := "", corev1.PullIfNotPresent
	for _, ic := range k.sts.Spec.Template.Spec.InitContainers {
		if ic.Name == inject.ContainerInstall {
			image, policy = ic.Image, ic.ImagePullPolicy
		}
	}
	if image == "" {
		return fmt.Errorf("StatefulSet %s has no %s container: is it injected?", k.sts.Name, inject.ContainerInstall)
	}
	spec := inject.BackupCronJobSpec(k.sts, opts, inject.Config{Image: image, ImagePullPolicy: policy})
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", inject.BackupCronJobName(k.sts.Name), time.Now().Unix()),
			Namespace: k.sts.Namespace, Labels: spec.JobTemplate.Labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: k.sts.Name, UID: k.sts.UID}}},
		Spec: spec.JobTemplate.Spec,
	}
	job.Spec.TTLSecondsAfterFinished = ptr.To(int32(24 * 3600))
	if err := c.c.Create(ctx, job); err != nil {
		return explain(err, "create", "jobs", k.sts.Namespace)
	}
	fmt.Fprintf(c.out, "job %s started: backing up %s to %s\n", job.Name, k.alias(), opts.BackupURI)
	if c.f.noWait {
		return nil
	}
	timeout := c.f.timeout
	if !c.f.timeoutSet {
		timeout = time.Hour // a backup takes as long as the data needs
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	phase := ""
	for {
		if err := c.c.Get(ctx, client.ObjectKeyFromObject(job), job); err != nil {
			return fmt.Errorf("waiting for job %s: %w", job.Name, err)
		}
		if succeeded, failed, _ := failover.JobFinished(job); succeeded || failed {
			outcome, err := failover.BackupOutcomeOf(ctx, c.c, job)
			if err != nil {
				return err
			}
			if m := outcome.Manifest; succeeded && m != nil {
				fmt.Fprintf(c.out, "backup %s committed: GTID %s, %s stored (%s streamed from %s) in %v; %d old backups deleted\n",
					m.Name, m.GTID, mib(m.StoredBytes), mib(m.StreamBytes), m.Source, m.End.Sub(m.Start).Round(time.Second), outcome.Pruned)
				return nil
			}
			if outcome.Error == "" {
				outcome.Error = "it left no outcome: kubectl logs job/" + job.Name
			}
			return fmt.Errorf("backup failed (job %s): %s", job.Name, outcome.Error)
		}
		pods := &corev1.PodList{}
		if c.c.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}) == nil && len(pods.Items) > 0 {
			if p := string(pods.Items[0].Status.Phase); p != phase {
				phase = p
				fmt.Fprintf(c.out, "pod %s: %s\n", pods.Items[0].Name, p)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s has not finished after %v; it goes on (kubectl get job %s)", job.Name, timeout, job.Name)
		case <-time.After(2 * time.Second):
		}
	}
}

// BackupOutcome is what `backup run` leaves in its termination message (at most 4 KiB
// are kept: the manifest is small).
type BackupOutcome = failover.BackupOutcome

func leaveOutcome(path string, o BackupOutcome) {
	if path == "" {
		return
	}
	data, _ := json.Marshal(o)
	_ = os.WriteFile(path, data, 0o644)
}

// listBackups is the CLI verb `backups`: the committed backups of a cluster, read from
// its bucket with the caller's own credentials.
func listBackups(ctx context.Context, c *cli) error {
	k, _, err := c.find(ctx)
	if err != nil {
		return err
	}
	uri := k.sts.Annotations[inject.AnnBackupURI]
	if uri == "" {
		return fmt.Errorf("cluster %s has no %s annotation: it is not backed up", k.alias(), inject.AnnBackupURI)
	}
	b, err := backup.OpenCluster(ctx, uri, k.sts.Namespace, k.sts.Name)
	if err != nil {
		return err
	}
	defer b.Close()
	all, err := b.List(ctx)
	if err != nil {
		return err
	}
	if c.f.output == "json" {
		enc := json.NewEncoder(c.out)
		enc.SetIndent("", "  ")
		return enc.Encode(all)
	}
	w := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tGTID\tSTORED\tSTREAM\tTOOK\tSERVER")
	for _, m := range all {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.GTID, mib(m.StoredBytes), mib(m.StreamBytes),
			m.End.Sub(m.Start).Round(time.Second), m.ServerVersion)
	}
	w.Flush()
	if len(all) == 0 {
		fmt.Fprintf(c.out, "no committed backup in %s\n", b.Where())
	}
	archive, err := b.ArchiveStatus(ctx)
	if err != nil {
		return err
	}
	if archive.Files > 0 || !archive.Reach.IsZero() {
		fmt.Fprintf(c.out, "binlog archive: %d files; a point-in-time restore (%s) reaches %s\n",
			archive.Files, inject.AnnRestoreTo, archive.Reach.UTC().Format(time.RFC3339))
	}
	return nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// newBackupBinlogsCommand is `replicant backup binlogs`: one archiving run, from
// inside the cluster (the <sts>-binlogs CronJob's Job).
func newBackupBinlogsCommand() *cobra.Command {
	var uri, sts, ns, terminationLog, source string
	var noFlush bool
	cmd := &cobra.Command{
		Use:   "binlogs",
		Short: "Archive the master's closed binlogs to the cluster's bucket, once",
		Long: `Ask the master's sidecar (<sts>-master) to close its binlog when that holds
transactions, then upload every closed file the archive lacks to
<backup-uri>/<namespace>/<sts>/binlogs/ (zstd, checked against its size, committed by
its record written last), skipping files whose transactions are archived already
(a new master's files from when it replicated). When the master's open file holds
nothing, the archive records that it reaches the present. A point-in-time restore
(replicant.dev/restore-to) replays these files. Credentials as for backup run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if uri == "" || sts == "" || ns == "" {
				return fmt.Errorf("--backup-uri, --statefulset and --namespace are required")
			}
			if source == "" {
				source = fmt.Sprintf("http://%s-master.%s.svc:%d", sts, ns, inject.SidecarPort)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			c, err := backup.OpenCluster(ctx, uri, ns, sts)
			if err != nil {
				leaveOutcome(terminationLog, BackupOutcome{Error: err.Error()})
				return err
			}
			defer c.Close()
			res, err := c.Archive(ctx, backup.ArchiveOptions{Source: source, Flush: !noFlush,
				User: os.Getenv("REPLICANT_BACKUP_USER"), Password: os.Getenv("REPLICANT_BACKUP_PASSWORD"),
				Log: newLogger().WithName("binlogs")})
			if err != nil {
				err = fmt.Errorf("archiving the binlogs of %s/%s to %s failed: %w", ns, sts, c.Where(), err)
				leaveOutcome(terminationLog, BackupOutcome{Error: err.Error()})
				return err
			}
			outcome := failover.BinlogsOutcome{Uploaded: len(res.Uploaded), Skipped: res.Skipped, Reach: res.Newest}
			leaveOutcome(terminationLog, BackupOutcome{Binlogs: &outcome})
			fmt.Fprintf(cmd.OutOrStdout(), "%d binlog files uploaded, %d already archived; the archive reaches %s\n",
				outcome.Uploaded, outcome.Skipped, outcome.Reach.UTC().Format(time.RFC3339))
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&uri, "backup-uri", "", "the bucket (replicant.dev/backup-uri)")
	fl.StringVar(&sts, "statefulset", os.Getenv("REPLICANT_STATEFULSET"), "the cluster's StatefulSet")
	fl.StringVar(&ns, "namespace", os.Getenv("POD_NAMESPACE"), "its namespace")
	fl.StringVar(&source, "source", "", "the master's sidecar (default http://<sts>-master.<namespace>.svc:8080)")
	fl.BoolVar(&noFlush, "no-flush", false, "archive only the files the server closed by itself")
	fl.StringVar(&terminationLog, "termination-log", "", "a file to leave the outcome in, as JSON (the container's termination message)")
	return cmd
}
