package failover_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/managed"
)

// TestScheduledBackupsAreKeptAndReported, on a real apiserver: replicant.dev/backup-*
// make the CronJob <sts>-backup (the replicant image's backup run, no API identity),
// a change of them replaces its spec, removing the schedule deletes it; a finished
// backup run is reported once, as an Event, from its pod's termination message.
func TestScheduledBackupsAreKeptAndReported(t *testing.T) {
	cl := managed.Start(t, 2)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes"}))
	key := client.ObjectKey{Namespace: "default", Name: inject.BackupCronJobName("db")}
	cronJob := func() (*batchv1.CronJob, error) {
		cj := &batchv1.CronJob{}
		return cj, cl.C.Get(cl.Ctx, key, cj)
	}
	if _, err := cronJob(); !apierrors.IsNotFound(err) {
		t.Fatalf("a CronJob without a schedule: %v", err)
	}
	cl.Request(inject.AnnBackupURI, "s3://backups/prod?region=eu-west-1")
	cl.Request(inject.AnnBackupSecret, "bucket-creds")
	cl.Request(inject.AnnBackupRetention, "7")
	cl.Request(inject.AnnBackupSchedule, "0 3 * * *")
	cl.Eventually("the CronJob", func() error {
		cj, err := cronJob()
		if err != nil {
			return err
		}
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		cmd := strings.Join(pod.Containers[0].Command, " ")
		switch {
		case !metav1.IsControlledBy(cj, cl.Sts):
			return fmt.Errorf("not controlled by the StatefulSet")
		case cj.Spec.Schedule != "0 3 * * *" || cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent:
			return fmt.Errorf("schedule %q, concurrency %q", cj.Spec.Schedule, cj.Spec.ConcurrencyPolicy)
		case cmd != "/usr/local/bin/replicant backup run --backup-uri=s3://backups/prod?region=eu-west-1 --statefulset=db --namespace=default --termination-log=/dev/termination-log --retention=7":
			return fmt.Errorf("command %q", cmd)
		case pod.Containers[0].Image != managed.Image || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken:
			return fmt.Errorf("image %q, token %v", pod.Containers[0].Image, pod.AutomountServiceAccountToken)
		case len(pod.Containers[0].EnvFrom) != 1 || pod.Containers[0].EnvFrom[0].SecretRef.Name != "bucket-creds":
			return fmt.Errorf("envFrom %+v", pod.Containers[0].EnvFrom)
		case cj.Spec.JobTemplate.Labels[inject.LabelBackupOf] != "db" || pod.Containers[0].Env[0].ValueFrom.SecretKeyRef.Name != "db-replicant":
			return fmt.Errorf("labels %v, env %+v", cj.Spec.JobTemplate.Labels, pod.Containers[0].Env)
		}
		return nil
	})
	first, _ := cronJob()

	// Settled: the CronJob is not written again, round after round.
	time.Sleep(2 * time.Second)
	if again, _ := cronJob(); again.ResourceVersion != first.ResourceVersion {
		t.Errorf("the CronJob was written while nothing changed")
	}
	cl.Request(inject.AnnBackupRetention, "3,14d")
	cl.Eventually("the retention changed", func() error {
		cj, err := cronJob()
		if err != nil {
			return err
		}
		if cmd := strings.Join(cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0].Command, " "); !strings.HasSuffix(cmd, "--retention=3,14d") {
			return fmt.Errorf("command %q", cmd)
		}
		return nil
	})

	// A run finished: its Job (as the CronJob controller makes it) and its pod, whose
	// container left the outcome, as `backup run` does.
	cj, _ := cronJob()
	job := inject.BackupJob(cj, "29000001")
	if err := cl.C.Create(cl.Ctx, job); err != nil {
		t.Fatal(err)
	}
	end := time.Now().UTC()
	m := backup.Manifest{Name: "20261205T030000Z", GTID: "0-100-42", StoredBytes: 5 << 20, StreamBytes: 50 << 20,
		Source: "http://db-replicas.default.svc:8080", Start: end.Add(-12 * time.Second), End: end}
	outcome, _ := json.Marshal(failover.BackupOutcome{Manifest: &m, Pruned: 2})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-x", Namespace: "default",
		Labels: map[string]string{batchv1.JobNameLabel: job.Name, inject.LabelBackupOf: "db"}},
		Spec: *job.Spec.Template.Spec.DeepCopy()}
	if err := cl.C.Create(cl.Ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{Name: inject.ContainerBackup,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: string(outcome)}}}}}
	if err := cl.C.Status().Update(cl.Ctx, pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if err := cl.C.Status().Update(cl.Ctx, job); err != nil {
		t.Fatal(err)
	}
	cl.EventWith(failover.EventBackupSucceeded, "backup 20261205T030000Z committed (job db-backup-29000001): GTID 0-100-42, 5.0 MiB stored (50.0 MiB streamed from http://db-replicas.default.svc:8080) in 12s; 2 old backups deleted")

	// Beside scheduled backups, the binlog archive: every 5 minutes unless told.
	binlogsKey := client.ObjectKey{Namespace: "default", Name: inject.BinlogsCronJobName("db")}
	archiveSchedule := func(want string) func() error {
		return func() error {
			cj := &batchv1.CronJob{}
			if err := cl.C.Get(cl.Ctx, binlogsKey, cj); err != nil {
				return err
			}
			pod := cj.Spec.JobTemplate.Spec.Template.Spec
			cmd := strings.Join(pod.Containers[0].Command, " ")
			switch {
			case cj.Spec.Schedule != want:
				return fmt.Errorf("schedule %q, want %q", cj.Spec.Schedule, want)
			case cmd != "/usr/local/bin/replicant backup binlogs --backup-uri=s3://backups/prod?region=eu-west-1 --statefulset=db --namespace=default --termination-log=/dev/termination-log":
				return fmt.Errorf("command %q", cmd)
			case !metav1.IsControlledBy(cj, cl.Sts) || cj.Spec.JobTemplate.Labels[inject.LabelBackupKind] != inject.BackupKindBinlogs:
				return fmt.Errorf("owner %v, labels %v", cj.OwnerReferences, cj.Spec.JobTemplate.Labels)
			}
			return nil
		}
	}
	cl.Eventually("the binlog archive's CronJob", archiveSchedule("*/5 * * * *"))
	cl.Request(inject.AnnBinlogArchiveInterval, "15m")
	cl.Eventually("the archive's interval changed", archiveSchedule("*/15 * * * *"))

	// Archive runs: a failure is an Event once per cause, a recovery says so once.
	binlogsCron := &batchv1.CronJob{}
	if err := cl.C.Get(cl.Ctx, binlogsKey, binlogsCron); err != nil {
		t.Fatal(err)
	}
	failed := failover.BackupOutcome{Error: "archiving the binlogs of default/db failed: source: the sidecar answered 401"}
	finishJob(t, cl, inject.BackupJob(binlogsCron, "1"), false, failed)
	cl.EventWith(failover.EventBinlogArchiveFailed, "binlog archiving failed: archiving the binlogs of default/db failed: source: the sidecar answered 401; the next run tries again")
	finishJob(t, cl, inject.BackupJob(binlogsCron, "2"), false, failed)
	finishJob(t, cl, inject.BackupJob(binlogsCron, "3"), true, failover.BackupOutcome{Binlogs: &failover.BinlogsOutcome{Uploaded: 4, Reach: end}})
	cl.EventWith(failover.EventBinlogArchiveRecovered, "binlog archiving works again (job db-binlogs-3): 4 files uploaded")
	if n := countEvents(t, cl, failover.EventBinlogArchiveFailed); n != 1 {
		t.Errorf("%d %s Events for two runs failing alike, want 1", n, failover.EventBinlogArchiveFailed)
	}
	if n := countEvents(t, cl, failover.EventBackupFailed); n != 0 {
		t.Errorf("archive runs reported as backups: %d %s Events", n, failover.EventBackupFailed)
	}

	sts := &appsv1.StatefulSet{}
	cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts)
	patch := client.MergeFrom(sts.DeepCopy())
	delete(sts.Annotations, inject.AnnBackupSchedule)
	delete(sts.Annotations, inject.AnnBinlogArchiveInterval)
	if err := cl.C.Patch(cl.Ctx, sts, patch); err != nil {
		t.Fatal(err)
	}
	cl.Eventually("the CronJobs deleted", func() error {
		if _, err := cronJob(); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		if err := cl.C.Get(cl.Ctx, binlogsKey, &batchv1.CronJob{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the archive's still there: %v", err)
		}
		return nil
	})
}

// finishJob creates job and a pod of it whose container left outcome, then marks the
// Job finished, as the Job controller would.
func finishJob(t *testing.T, cl *managed.Cluster, job *batchv1.Job, succeeded bool, outcome failover.BackupOutcome) {
	t.Helper()
	if err := cl.C.Create(cl.Ctx, job); err != nil {
		t.Fatal(err)
	}
	msg, _ := json.Marshal(outcome)
	podLabels := map[string]string{batchv1.JobNameLabel: job.Name}
	for k, v := range job.Spec.Template.Labels {
		podLabels[k] = v
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-x", Namespace: job.Namespace, Labels: podLabels},
		Spec: *job.Spec.Template.Spec.DeepCopy()}
	if err := cl.C.Create(cl.Ctx, pod); err != nil {
		t.Fatal(err)
	}
	exit, phase := int32(0), corev1.PodSucceeded
	if !succeeded {
		exit, phase = 1, corev1.PodFailed
	}
	pod.Status = corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{Name: inject.ContainerBackup,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: exit, Message: string(msg)}}}}}
	if err := cl.C.Status().Update(cl.Ctx, pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if !succeeded {
		job.Status = batchv1.JobStatus{StartTime: &now, Failed: 1, Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: batchv1.JobReasonBackoffLimitExceeded},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, Reason: batchv1.JobReasonBackoffLimitExceeded}}}
	}
	if err := cl.C.Status().Update(cl.Ctx, job); err != nil {
		t.Fatal(err)
	}
}

func countEvents(t *testing.T, cl *managed.Cluster, reason string) int {
	t.Helper()
	events := &corev1.EventList{}
	if err := cl.C.List(cl.Ctx, events, client.InNamespace("default")); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events.Items {
		if e.Reason == reason {
			n += int(max(e.Count, 1))
		}
	}
	return n
}
