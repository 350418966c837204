package inject

import (
	"fmt"

	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/replicant-dev/replicant/backup"
)

// This file owns replicant's API on the StatefulSet: every label and annotation name,
// their defaults, how a value is parsed, and the message a bad value is refused with.
// No other file spells one of these strings.

// Prefix is the domain of every replicant label and annotation.
const Prefix = "replicant.dev/"

// Labels.
const (
	// LabelInject on a StatefulSet opts it in; only the value InjectEnabled does.
	LabelInject   = Prefix + "inject"
	InjectEnabled = "enabled"
	// LabelCluster on the pod template (so on every pod) names the StatefulSet.
	LabelCluster = Prefix + "cluster"
	// LabelBackupOf marks the Jobs and pods of a cluster's backups (not members of
	// it: no LabelCluster, so neither the Services nor the budget count them).
	LabelBackupOf = Prefix + "backup-of"
	// LabelRole and LabelHealthy on pods are written by the controller only.
	LabelRole    = Prefix + "role"
	LabelHealthy = Prefix + "healthy"
)

// Annotations the user sets on the StatefulSet.
const (
	AnnFlavor            = Prefix + "flavor"
	AnnContainer         = Prefix + "container"
	AnnServerIDOffset    = Prefix + "server-id-offset"
	AnnFailover          = Prefix + "failover"
	AnnDurability        = Prefix + "durability"
	AnnMaxLag            = Prefix + "max-lag"
	AnnCredentialsSecret = Prefix + "credentials-secret"
	AnnBackupSchedule    = Prefix + "backup-schedule"
	AnnBackupURI         = Prefix + "backup-uri"
	AnnBackupSecret      = Prefix + "backup-secret"
	AnnBackupRetention   = Prefix + "backup-retention"
	AnnInitURI           = Prefix + "init-uri"
	// AnnRestoreTo with AnnInitURI restores to a point in time: the newest backup
	// before it, then the archived binlogs up to it (an RFC 3339 time, exclusive, or a
	// GTID position, inclusive).
	AnnRestoreTo = Prefix + "restore-to"
	// AnnBinlogArchiveInterval is how often the master's binlogs are archived to
	// backup-uri (whole minutes, 1m to 60m; "off" archives none). Archiving runs
	// whenever backups are scheduled; the default is DefaultBinlogArchiveInterval.
	AnnBinlogArchiveInterval = Prefix + "binlog-archive-interval"
)

// DefaultBinlogArchiveInterval bounds how far behind the binlog archive is, so how
// much a point-in-time restore may lack, when backups are scheduled.
const DefaultBinlogArchiveInterval = 5 * time.Minute

// Annotations that are requests (written by the CLI or by hand, removed by the
// controller once carried out) or observed state (written by the controller only).
const (
	AnnTakeoverTo    = Prefix + "takeover-to"
	AnnFailoverTo    = Prefix + "failover-to"
	AnnMaster        = Prefix + "master"
	AnnLastOperation = Prefix + "last-operation"
	// AnnConditions on the StatefulSet lists what keeps the cluster from being fully
	// managed (JSON: type, message, since), written by the controller when it
	// changes; absent when nothing does.
	AnnConditions = Prefix + "conditions"
	// AnnStatus, AnnResetReplica and AnnDetached live on pods. reset-replica: "true"
	// asks the controller to detach a replica (RESET SLAVE ALL); it then marks the
	// pod detached: "true" and leaves it alone until that annotation is removed.
	AnnStatus       = Prefix + "status"
	AnnResetReplica = Prefix + "reset-replica"
	AnnDetached     = Prefix + "detached"
	// AnnInjected on the pod template records what the webhook injected:
	// "<replicant version>/<hash of the injected parts>".
	AnnInjected = Prefix + "injected"
	// AnnUserUpdateStrategy on the StatefulSet keeps the user's own updateStrategy
	// (JSON) while the webhook sets OnDelete (the controller rolls the pods, replicas
	// first and master last); opting out puts it back.
	AnnUserUpdateStrategy = Prefix + "user-update-strategy"
)

// statefulSetAnnotations is every annotation a StatefulSet may carry under Prefix.
// Anything else under Prefix is refused, so a typo never silently does nothing.
var statefulSetAnnotations = map[string]bool{
	AnnFlavor: true, AnnContainer: true, AnnServerIDOffset: true, AnnFailover: true,
	AnnDurability: true, AnnMaxLag: true, AnnCredentialsSecret: true,
	AnnBackupSchedule: true, AnnBackupURI: true, AnnBackupSecret: true,
	AnnBackupRetention: true, AnnInitURI: true, AnnRestoreTo: true, AnnBinlogArchiveInterval: true,
	AnnTakeoverTo: true, AnnFailoverTo: true, AnnMaster: true, AnnLastOperation: true,
	AnnUserUpdateStrategy: true, AnnConditions: true,
}

// Flavor is the kind of server the StatefulSet runs.
type Flavor string

const (
	FlavorMariaDB Flavor = "mariadb"
	FlavorMySQL   Flavor = "mysql"
)

// FailoverMode says whether the controller fails over on its own.
type FailoverMode string

const (
	FailoverAuto   FailoverMode = "auto"
	FailoverManual FailoverMode = "manual"
)

// Durability says what a failover may lose.
type Durability string

const (
	// DurabilitySemiSync: no transaction acknowledged to a client is lost by a failover.
	DurabilitySemiSync Durability = "semi-sync"
	DurabilityAsync    Durability = "async"
)

// Defaults.
const (
	DefaultServerIDOffset = 100
	DefaultFailover       = FailoverAuto
	DefaultDurability     = DurabilitySemiSync
	DefaultMaxLag         = 30 * time.Second
	// MaxServerIDOffset leaves room for a million ordinals below 2^32-1, the largest server_id.
	MaxServerIDOffset = 4294967295 - 1000000
)

// DefaultCredentialsSecret is the Secret holding replicant's own MySQL users.
func DefaultCredentialsSecret(statefulSet string) string { return statefulSet + "-replicant" }

// Options is the validated, defaulted form of a StatefulSet's annotations.
type Options struct {
	Flavor            Flavor
	Container         string // the database container
	ServerIDOffset    int64
	Failover          FailoverMode
	Durability        Durability
	MaxLag            time.Duration
	CredentialsSecret string
	BackupSchedule    string
	BackupURI         string
	BackupSecret      string
	BackupRetention   string
	InitURI           string
	RestoreTo         string
	// BinlogArchiveInterval is 0 when no binlogs are archived.
	BinlogArchiveInterval time.Duration
}

// Problems is every refusal found in one StatefulSet; its message lists them all.
type Problems []string

func (p Problems) Error() string { return strings.Join(p, "; ") }

func (p *Problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// refuse formats the one message shape users see for a bad annotation value.
func (p *Problems) refuse(annotation, value, allowed string) {
	p.add("annotation %s: value %q is not allowed: %s", annotation, value, allowed)
}

// ParseOptions reads, defaults and validates every replicant annotation of sts. It
// returns all problems at once, so a user fixes a manifest in one round trip.
func ParseOptions(sts *appsv1.StatefulSet) (Options, error) {
	ann := sts.Annotations
	var problems Problems
	opts := Options{
		ServerIDOffset:    DefaultServerIDOffset,
		Failover:          DefaultFailover,
		Durability:        DefaultDurability,
		MaxLag:            DefaultMaxLag,
		CredentialsSecret: DefaultCredentialsSecret(sts.Name),
	}

	var unknown []string
	for k := range ann {
		if strings.HasPrefix(k, Prefix) && !statefulSetAnnotations[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		problems.add("annotation %s is not a replicant annotation; known: %s", k, knownAnnotations())
	}

	containers := sts.Spec.Template.Spec.Containers
	if v, ok := ann[AnnContainer]; ok {
		if findContainer(containers, v) < 0 {
			problems.refuse(AnnContainer, v, "the name of a container of the pod template ("+containerNames(containers)+")")
		} else {
			opts.Container = v
		}
	} else if name, err := defaultContainer(containers); err != nil {
		problems.add("%s; set annotation %s to one of: %s", err, AnnContainer, containerNames(containers))
	} else {
		opts.Container = name
	}

	if v, ok := ann[AnnFlavor]; ok {
		switch Flavor(v) {
		case FlavorMariaDB, FlavorMySQL:
			opts.Flavor = Flavor(v)
		default:
			problems.refuse(AnnFlavor, v, "mariadb or mysql")
		}
	} else if opts.Container != "" {
		image := containers[findContainer(containers, opts.Container)].Image
		if f, ok := FlavorFromImage(image); ok {
			opts.Flavor = f
		} else {
			problems.add("cannot tell the flavor from image %q of container %q; set annotation %s to mariadb or mysql", image, opts.Container, AnnFlavor)
		}
	}

	if v, ok := ann[AnnServerIDOffset]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 1 || n > MaxServerIDOffset {
			problems.refuse(AnnServerIDOffset, v, fmt.Sprintf("an integer from 1 to %d (server_id = offset + ordinal)", MaxServerIDOffset))
		} else {
			opts.ServerIDOffset = n
		}
	}

	if v, ok := ann[AnnFailover]; ok {
		switch FailoverMode(v) {
		case FailoverAuto, FailoverManual:
			opts.Failover = FailoverMode(v)
		default:
			problems.refuse(AnnFailover, v, "auto or manual")
		}
	}

	if v, ok := ann[AnnDurability]; ok {
		switch Durability(v) {
		case DurabilitySemiSync, DurabilityAsync:
			opts.Durability = Durability(v)
		default:
			problems.refuse(AnnDurability, v, "semi-sync or async")
		}
	}

	if v, ok := ann[AnnMaxLag]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d < time.Second {
			problems.refuse(AnnMaxLag, v, "a duration of at least 1s, such as 30s or 2m")
		} else {
			opts.MaxLag = d
		}
	}

	secretName := func(annotation string, dst *string) {
		if v, ok := ann[annotation]; ok {
			if errs := validation.IsDNS1123Subdomain(v); len(errs) > 0 {
				problems.refuse(annotation, v, "a Secret name (lowercase letters, digits, '-' and '.', at most 253 characters)")
			} else {
				*dst = v
			}
		}
	}
	bucketURI := func(annotation, example string, dst *string) {
		if v, ok := ann[annotation]; ok {
			if _, err := backup.ParseURI(v); err != nil {
				problems.refuse(annotation, v, example+" ("+schemesList()+")")
			} else {
				*dst = v
			}
		}
	}
	secretName(AnnCredentialsSecret, &opts.CredentialsSecret)
	secretName(AnnBackupSecret, &opts.BackupSecret)
	bucketURI(AnnBackupURI, "a bucket URI such as s3://bucket/prefix", &opts.BackupURI)
	bucketURI(AnnInitURI, "the URI of one backup, <backup-uri>/<namespace>/<sts>/<name>, or the newest one, <backup-uri>/<namespace>/<sts>/latest, such as s3://bucket/prefix/default/db/latest", &opts.InitURI)

	if v, ok := ann[AnnRestoreTo]; ok {
		target, err := backup.ParseRestoreTarget(v)
		mysqlSet := !target.GTID.Empty() && len(target.GTID.GTIDs()) == 0
		if err != nil || (!target.GTID.Empty() && mysqlSet != (opts.Flavor == FlavorMySQL)) {
			problems.refuse(AnnRestoreTo, v, "an RFC 3339 time such as 2026-12-04T10:30:00Z (transactions before it are restored), or the flavor's GTID position: MariaDB's such as 0-100-2045, MySQL's GTID set such as 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-2045 (restored up to and including it)")
		} else if _, hasInit := ann[AnnInitURI]; !hasInit {
			problems.add("annotation %s is set but %s is not: a point in time is restored from a backup; set %s to the backups' directory (<backup-uri>/<namespace>/<sts>) or one backup", AnnRestoreTo, AnnInitURI, AnnInitURI)
		} else {
			opts.RestoreTo = v
		}
	}
	if v, ok := ann[AnnBackupSchedule]; ok {
		if _, err := cron.ParseStandard(v); err != nil {
			problems.refuse(AnnBackupSchedule, v, "a cron schedule such as \"0 3 * * *\" or @daily")
		} else if _, hasURI := ann[AnnBackupURI]; !hasURI {
			problems.add("annotation %s is set but %s is not: a schedule needs a bucket to write to", AnnBackupSchedule, AnnBackupURI)
		} else {
			opts.BackupSchedule = v
		}
	}
	if opts.BackupSchedule != "" {
		opts.BinlogArchiveInterval = DefaultBinlogArchiveInterval
	}
	if v, ok := ann[AnnBinlogArchiveInterval]; ok {
		d, err := time.ParseDuration(v)
		switch {
		case v == "off":
			opts.BinlogArchiveInterval = 0
		case err != nil || d < time.Minute || d > time.Hour || d%time.Minute != 0:
			problems.refuse(AnnBinlogArchiveInterval, v, "whole minutes from 1m to 60m, such as 5m, or off")
		case opts.BackupSchedule == "":
			problems.add("annotation %s is set but %s is not: binlogs are archived beside scheduled backups (a point-in-time restore starts from one)", AnnBinlogArchiveInterval, AnnBackupSchedule)
		default:
			opts.BinlogArchiveInterval = d
		}
	}
	if v, ok := ann[AnnBackupRetention]; ok {
		if r, err := backup.ParseRetention(v); err != nil {
			problems.refuse(AnnBackupRetention, v, backup.RetentionHelp)
		} else {
			opts.BackupRetention = r.String()
		}
	}

	if len(problems) > 0 {
		return Options{}, problems
	}
	return opts, nil
}

// NotActedOn lists, for the annotations opts carries, those that take no effect as
// set, each saying why. The webhook returns them as admission warnings (kubectl prints
// them): a setting that does nothing must not be silent.
func (o Options) NotActedOn() []string {
	var notes []string
	if o.BackupURI == "" && o.InitURI == "" {
		for _, a := range []struct {
			name string
			set  bool
		}{{AnnBackupSecret, o.BackupSecret != ""}, {AnnBackupRetention, o.BackupRetention != ""}} {
			if a.set {
				notes = append(notes, fmt.Sprintf("%s has no effect without %s (or %s for %s)", a.name, AnnBackupURI, AnnInitURI, AnnBackupSecret))
			}
		}
	}
	return notes
}

// FlavorFromImage tells the flavor from a server image reference, looking at its
// repository name only (never the registry or tag): mariadb, mysql, percona.
func FlavorFromImage(image string) (Flavor, bool) {
	repo := image
	if i := strings.IndexAny(repo, "@"); i >= 0 {
		repo = repo[:i]
	}
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		repo = repo[i+1:]
	}
	if i := strings.Index(repo, ":"); i >= 0 {
		repo = repo[:i]
	}
	repo = strings.ToLower(repo)
	switch {
	case strings.Contains(repo, "mariadb"):
		return FlavorMariaDB, true
	case strings.Contains(repo, "mysql"), strings.Contains(repo, "percona"):
		return FlavorMySQL, true
	}
	return "", false
}

func defaultContainer(containers []corev1.Container) (string, error) {
	for _, want := range []string{string(FlavorMariaDB), string(FlavorMySQL)} {
		if findContainer(containers, want) >= 0 {
			return want, nil
		}
	}
	var user []string
	for _, c := range containers {
		if !isReservedName(c.Name) {
			user = append(user, c.Name)
		}
	}
	if len(user) == 1 {
		return user[0], nil
	}
	return "", fmt.Errorf("cannot tell which of the %d containers runs the database (none is named mariadb or mysql)", len(user))
}

func schemesList() string {
	out := make([]string, len(backup.Schemes))
	for i, s := range backup.Schemes {
		out[i] = s + "://"
	}
	return strings.Join(out, ", ")
}

func knownAnnotations() string {
	names := make([]string, 0, len(statefulSetAnnotations))
	for k := range statefulSetAnnotations {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func containerNames(containers []corev1.Container) string {
	names := make([]string, 0, len(containers))
	for _, c := range containers {
		names = append(names, c.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func findContainer(containers []corev1.Container, name string) int {
	for i := range containers {
		if containers[i].Name == name {
			return i
		}
	}
	return -1
}
