package failover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/inject"
)

// BackupOutcome is what a backup run (`replicant backup run`) leaves in its pod's
// termination message, for the controller to report.
type BackupOutcome struct {
	Manifest *backup.Manifest `json:"manifest,omitempty"`
	Pruned   int              `json:"pruned,omitempty"`
	// Binlogs is an archiving run's (`replicant backup binlogs`).
	Binlogs *BinlogsOutcome `json:"binlogs,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// BinlogsOutcome is what one archiving run did.
type BinlogsOutcome struct {
	Uploaded int `json:"uploaded"`
	Skipped  int `json:"skipped"`
	// Reach is the time up to which the archive holds every transaction.
	Reach time.Time `json:"reach"`
}

// Events of backups.
const (
	EventBackupSucceeded = "BackupSucceeded"
	EventBackupFailed    = "BackupFailed"
	// EventBinlogArchiveFailed is raised once per failure cause (the archive runs
	// every few minutes; a success after failures says so once, as
	// EventBinlogArchiveRecovered).
	EventBinlogArchiveFailed    = "BinlogArchiveFailed"
	EventBinlogArchiveRecovered = "BinlogArchiveRecovered"
)

// annSpecHash on the CronJob is the hash of the spec replicant last wrote: the spec is
// replaced only when what the annotations ask for changed, so the apiserver's defaults
// never make a steady cluster write.
const annSpecHash = inject.Prefix + "spec-hash"

var (
	backupLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_backup_last_success_timestamp_seconds",
		Help: "When the last successful backup of the cluster ended (Unix time).",
	}, []string{"namespace", "cluster"})
	backupDuration = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_backup_last_duration_seconds",
		Help: "How long the last successful backup took.",
	}, []string{"namespace", "cluster"})
	backupBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_backup_last_stored_bytes",
		Help: "The size of the last successful backup in the bucket (compressed).",
	}, []string{"namespace", "cluster"})
	binlogArchiveReach = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_binlog_archive_reach_timestamp_seconds",
		Help: "The time up to which the binlog archive holds every transaction of the cluster (Unix time); now minus this is the archive's lag, what a point-in-time restore cannot reach yet.",
	}, []string{"namespace", "cluster"})
	binlogArchiveRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "replicant_binlog_archive_runs_total",
		Help: "Binlog archiving runs seen finished, by result.",
	}, []string{"namespace", "cluster", "result"})
	backupsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "replicant_backups_total",
		Help: "Backup runs seen finished, by result.",
	}, []string{"namespace", "cluster", "result"})
)

// keepBackupSchedule keeps the CronJobs <sts>-backup and <sts>-binlogs as
// replicant.dev/backup-* and binlog-archive-interval say: made when asked for,
// replaced when the annotations change, deleted when no longer asked for. A user's
// CronJob of either name is left alone: conflict.
func (r *Reconciler) keepBackupSchedule(ctx context.Context, sts *appsv1.StatefulSet, opts inject.Options) (conflicts []string, err error) {
	cfg := inject.Config{Image: r.Options.Image, ImagePullPolicy: r.Options.ImagePullPolicy}
	for _, job := range []struct {
		name, annotation string
		wanted           bool
		spec             func() batchv1.CronJobSpec
	}{
		{inject.BackupCronJobName(sts.Name), inject.AnnBackupSchedule, opts.BackupSchedule != "",
			func() batchv1.CronJobSpec { return inject.BackupCronJobSpec(sts, opts, cfg) }},
		{inject.BinlogsCronJobName(sts.Name), inject.AnnBinlogArchiveInterval, opts.BinlogArchiveInterval > 0,
			func() batchv1.CronJobSpec { return inject.BinlogsCronJobSpec(sts, opts, cfg) }},
	} {
		conflict, err := r.keepCronJob(ctx, sts, job.name, job.wanted, job.spec)
		if err != nil {
			return conflicts, err
		}
		if conflict {
			conflicts = append(conflicts, fmt.Sprintf("CronJob %s exists and StatefulSet %s does not control it: left as it is, so %s takes no effect; rename or delete it", job.name, sts.Name, job.annotation))
		}
	}
	return conflicts, nil
}

// keepCronJob makes, replaces (when the spec replicant would write changed) or
// deletes one CronJob of the cluster; conflict: one of that name is not the cluster's.
func (r *Reconciler) keepCronJob(ctx context.Context, sts *appsv1.StatefulSet, name string, wanted bool, build func() batchv1.CronJobSpec) (conflict bool, err error) {
	cron := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sts.Namespace}}
	if !wanted {
		if err := r.Client.Get(ctx, client.ObjectKeyFromObject(cron), cron); err != nil || !metav1.IsControlledBy(cron, sts) {
			return false, client.IgnoreNotFound(err)
		}
		uid := cron.UID
		if err := r.Client.Delete(ctx, cron, client.Preconditions{UID: &uid}); err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("delete CronJob %s: %w", cron.Name, err)
		}
		return false, nil
	}
	if r.Options.Image == "" {
		return false, fmt.Errorf("scheduled backups need the replicant image (the manager's --image)")
	}
	spec := build()
	data, _ := json.Marshal(spec)
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:8])
	return keepControlled(ctx, r.Client, r.Reader, sts, cron, func() {
		if cron.Annotations[annSpecHash] == hash {
			return
		}
		cron.Spec = spec
		if cron.Annotations == nil {
			cron.Annotations = map[string]string{}
		}
		cron.Annotations[annSpecHash] = hash
	})
}

// reportBackups raises an Event and sets the metrics for each backup run of the
// cluster that finished since this controller started (once each): its outcome is
// the run's termination message.
func (r *Reconciler) reportBackups(ctx context.Context, sts *appsv1.StatefulSet) error {
	jobs := &batchv1.JobList{}
	if err := r.Client.List(ctx, jobs, client.InNamespace(sts.Namespace), client.MatchingLabels{inject.LabelBackupOf: sts.Name}); err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	r.mu.Lock()
	mem := r.mem(key)
	since := mem.firstSeen
	if mem.reportedJobs == nil {
		mem.reportedJobs = map[types.UID]bool{}
	}
	seen := map[types.UID]bool{}
	var todo []batchv1.Job
	for _, job := range jobs.Items {
		seen[job.UID] = true
		if !mem.reportedJobs[job.UID] {
			todo = append(todo, job)
		}
	}
	for uid := range mem.reportedJobs {
		if !seen[uid] {
			delete(mem.reportedJobs, uid)
		}
	}
	r.mu.Unlock()

	for _, job := range todo {
		succeeded, failed, at := JobFinished(&job)
		if !succeeded && !failed {
			continue
		}
		if at.Before(since) { // reported by the controller before this one
			r.markReported(key, job.UID)
			continue
		}
		outcome, err := BackupOutcomeOf(ctx, r.Reader, &job)
		if err != nil {
			return err
		}
		r.markReported(key, job.UID)
		if job.Labels[inject.LabelBackupKind] == inject.BackupKindBinlogs {
			r.reportArchiveRun(sts, &job, succeeded, outcome)
			continue
		}
		labels := prometheus.Labels{"namespace": sts.Namespace, "cluster": sts.Name}
		m := outcome.Manifest
		if succeeded && m != nil {
			backupsTotal.WithLabelValues(sts.Namespace, sts.Name, "ok").Inc()
			backupLastSuccess.With(labels).Set(float64(m.End.Unix()))
			backupDuration.With(labels).Set(m.End.Sub(m.Start).Seconds())
			backupBytes.With(labels).Set(float64(m.StoredBytes))
			r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventBackupSucceeded,
				"backup %s committed (job %s): GTID %s, %s stored (%s streamed from %s) in %v; %d old backups deleted by retention",
				m.Name, job.Name, m.GTID, mibString(m.StoredBytes), mibString(m.StreamBytes), m.Source,
				m.End.Sub(m.Start).Round(time.Second), outcome.Pruned)
			if outcome.Error != "" {
				r.Recorder.Eventf(sts, corev1.EventTypeWarning, EventBackupFailed, "job %s: %s", job.Name, outcome.Error)
			}
			continue
		}
		backupsTotal.WithLabelValues(sts.Namespace, sts.Name, "failed").Inc()
		why := outcome.Error
		if why == "" {
			why = "it left no outcome (see kubectl logs job/" + job.Name + ")"
		}
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, EventBackupFailed, "job %s: %s; the next schedule tries again", job.Name, capMessage(why, 600))
	}
	return nil
}

// reportArchiveRun sets the archive's metrics after an archiving run, and raises an
// Event only when the runs start failing (once per cause) or recover: every few
// minutes an Event would be noise.
func (r *Reconciler) reportArchiveRun(sts *appsv1.StatefulSet, job *batchv1.Job, succeeded bool, outcome BackupOutcome) {
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	if succeeded && outcome.Binlogs != nil {
		binlogArchiveRuns.WithLabelValues(sts.Namespace, sts.Name, "ok").Inc()
		if !outcome.Binlogs.Reach.IsZero() {
			binlogArchiveReach.WithLabelValues(sts.Namespace, sts.Name).Set(float64(outcome.Binlogs.Reach.Unix()))
		}
		r.mu.Lock()
		mem := r.mem(key)
		failing := mem.lastWarning[EventBinlogArchiveFailed] != ""
		delete(mem.lastWarning, EventBinlogArchiveFailed)
		r.mu.Unlock()
		if failing {
			r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventBinlogArchiveRecovered,
				"binlog archiving works again (job %s): %d files uploaded, the archive reaches %s",
				job.Name, outcome.Binlogs.Uploaded, outcome.Binlogs.Reach.UTC().Format(time.RFC3339))
		}
		return
	}
	binlogArchiveRuns.WithLabelValues(sts.Namespace, sts.Name, "failed").Inc()
	why := outcome.Error
	if why == "" {
		why = "the run left no outcome (see kubectl logs -l " + inject.LabelBackupKind + "=" + inject.BackupKindBinlogs + ")"
	}
	r.warnOnce(sts, EventBinlogArchiveFailed, "binlog archiving failed: "+capMessage(why, 600)+"; the next run tries again")
}

func (r *Reconciler) markReported(key types.NamespacedName, uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if mem := r.mem(key); mem.reportedJobs != nil {
		mem.reportedJobs[uid] = true
	}
}

// JobFinished reads a Job's Complete or Failed condition.
func JobFinished(job *batchv1.Job) (succeeded, failed bool, at time.Time) {
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return true, false, c.LastTransitionTime.Time
		case batchv1.JobFailed:
			return false, true, c.LastTransitionTime.Time
		}
	}
	return false, false, time.Time{}
}

// BackupOutcomeOf reads a backup run's outcome, its pod's termination message (the
// manager reads it uncached: its cache holds only database pods).
func BackupOutcomeOf(ctx context.Context, reader client.Reader, job *batchv1.Job) (BackupOutcome, error) {
	pods := &corev1.PodList{}
	if err := reader.List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
		return BackupOutcome{}, err
	}
	var out BackupOutcome
	for _, pod := range pods.Items {
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Name != inject.ContainerBackup || cs.State.Terminated == nil {
				continue
			}
			msg := cs.State.Terminated.Message
			if json.Unmarshal([]byte(msg), &out) != nil && msg != "" {
				out.Error = msg // the log's tail, when the run left no outcome
			}
		}
	}
	return out, nil
}

func mibString(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func capMessage(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
