package inject

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ContainerBackup is the container of a scheduled backup's pod.
const ContainerBackup = "replicant-backup"

// BackupCronJobName is the CronJob that takes a cluster's scheduled backups.
func BackupCronJobName(sts string) string { return sts + "-backup" }

// BinlogsCronJobName is the CronJob that archives a cluster's binlogs.
func BinlogsCronJobName(sts string) string { return sts + "-binlogs" }

// LabelBackupKind on the Jobs and pods of the binlog archive says "binlogs" (backup
// runs have none).
const (
	LabelBackupKind   = Prefix + "backup-kind"
	BackupKindBinlogs = "binlogs"
)

// TerminationLog is where `replicant backup run` leaves its outcome for the
// controller (the container's termination message).
const TerminationLog = "/dev/termination-log"

// BackupCronJobSpec is the CronJob <sts>-backup as replicant.dev/backup-* say: each
// run streams a backup from a healthy replica's sidecar to the bucket with the
// replicant image, then applies retention. Its pod has no ServiceAccount token, no
// volumes and no privilege: it needs only the network, the sidecar's backup account
// and the bucket's credentials (the backup Secret's keys, as the cloud's SDK reads
// them from the environment). One run at a time; a failed run is not retried, the
// next schedule is (a backup that failed for a reason will fail again at once).
func BackupCronJobSpec(sts *appsv1.StatefulSet, opts Options, cfg Config) batchv1.CronJobSpec {
	args := []string{ImageBinary, "backup", "run", "--backup-uri=" + opts.BackupURI,
		"--statefulset=" + sts.Name, "--namespace=" + sts.Namespace, "--termination-log=" + TerminationLog}
	if opts.Flavor == FlavorMySQL {
		args = append(args, "--flavor="+string(opts.Flavor)) // the manifest says what the backup is of
	}
	if opts.BackupRetention != "" {
		args = append(args, "--retention="+opts.BackupRetention)
	}
	spec := backupCronJob(sts, opts, cfg, args, map[string]string{LabelBackupOf: sts.Name})
	spec.Schedule = opts.BackupSchedule
	return spec
}

// BinlogsCronJobSpec is the CronJob <sts>-binlogs: every BinlogArchiveInterval it
// asks the master's sidecar to close its binlog when that holds transactions, and
// uploads the closed files the archive lacks (`replicant backup binlogs`). The same
// confined pod as a backup run's. A run that fails is followed by the next one,
// which uploads what that one did not: the archive's lag is the time since the last
// successful run plus one interval.
func BinlogsCronJobSpec(sts *appsv1.StatefulSet, opts Options, cfg Config) batchv1.CronJobSpec {
	args := []string{ImageBinary, "backup", "binlogs", "--backup-uri=" + opts.BackupURI,
		"--statefulset=" + sts.Name, "--namespace=" + sts.Namespace, "--termination-log=" + TerminationLog}
	spec := backupCronJob(sts, opts, cfg, args, map[string]string{LabelBackupOf: sts.Name, LabelBackupKind: BackupKindBinlogs})
	minutes := int(opts.BinlogArchiveInterval / time.Minute)
	spec.Schedule = fmt.Sprintf("*/%d * * * *", minutes)
	if minutes >= 60 {
		spec.Schedule = "0 * * * *"
	}
	spec.SuccessfulJobsHistoryLimit = ptr.To(int32(1))
	spec.StartingDeadlineSeconds = ptr.To(int64(60 * minutes))
	// A run never outlasts its interval: the next one carries on.
	spec.JobTemplate.Spec.ActiveDeadlineSeconds = ptr.To(int64(60 * minutes))
	return spec
}

func backupCronJob(sts *appsv1.StatefulSet, opts Options, cfg Config, args []string, labels map[string]string) batchv1.CronJobSpec {
	ctr := corev1.Container{
		Name:                     ContainerBackup,
		Image:                    cfg.Image,
		ImagePullPolicy:          cfg.ImagePullPolicy,
		Command:                  args,
		Env:                      credentialEnv(opts),
		TerminationMessagePath:   TerminationLog,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi"),
		}},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	if opts.BackupSecret != "" {
		ctr.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: opts.BackupSecret}}}}
	}
	return batchv1.CronJobSpec{
		ConcurrencyPolicy:          batchv1.ForbidConcurrent,
		StartingDeadlineSeconds:    ptr.To(int64(300)),
		SuccessfulJobsHistoryLimit: ptr.To(int32(3)),
		FailedJobsHistoryLimit:     ptr.To(int32(3)),
		JobTemplate: batchv1.JobTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr.To(int32(0)),
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						RestartPolicy:                corev1.RestartPolicyNever,
						AutomountServiceAccountToken: ptr.To(false),
						EnableServiceLinks:           ptr.To(false),
						Containers:                   []corev1.Container{ctr},
					},
				},
			},
		},
	}
}

// BackupJob is a one-off run of the cluster's backup CronJob (replicant backup -a):
// the same pod, named after the moment it was asked for.
func BackupJob(cron *batchv1.CronJob, suffix string) *batchv1.Job {
	t := cron.Spec.JobTemplate
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-%s", cron.Name, suffix), Namespace: cron.Namespace, Labels: t.Labels,
			Annotations:     map[string]string{"cronjob.kubernetes.io/instantiate": "manual"},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(cron, batchv1.SchemeGroupVersion.WithKind("CronJob"))},
		},
		Spec: *t.Spec.DeepCopy(),
	}
}
