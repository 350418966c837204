// Package inject owns what replicant adds to a user's StatefulSet: the annotation
// schema (annotations.go) and the pure function that turns a labelled StatefulSet into
// a managed one (init containers, sidecar, volumes, labels). It does no I/O; the
// admission webhook (package webhook) is a thin wrapper around Mutate.
//
// Mutate is idempotent by construction: it first strips everything replicant owns
// (recognised by name and by the command it runs, not by a marker annotation alone),
// then adds it again from the StatefulSet and Config. The same input gives the same
// template byte for byte, so re-applying a manifest never starts a rollout; only a new
// replicant image (Config.Image) or a change of an annotation the pods use does.
package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// Names of what replicant injects. They are part of the contract (DESIGN.md).
const (
	ContainerInstall = "replicant-install"
	ContainerConfig  = "replicant-config"
	ContainerClone   = "replicant-clone"
	ContainerSidecar = "replicant-sidecar"

	VolumeBin   = "replicant-bin"
	VolumeConf  = "replicant-conf"
	VolumeState = "replicant-state"
	// VolumeScratch (MySQL only) is where the server's CLONE LOCAL puts a backup's copy
	// for the sidecar to stream; mounted at ScratchDir in both containers.
	VolumeScratch = "replicant-scratch"
	ScratchDir    = "/var/lib/replicant-scratch"
	// StateDir is where replicant-clone sees the controller's state ConfigMap
	// (optional: absent for a cluster that never had a master); StateKey is the
	// ConfigMap's key, so the file StateDir/StateKey.
	StateDir = "/replicant/state"
	StateKey = "state"

	// BinDir holds the replicant binary copied by replicant-install, so that every
	// later step runs in the server's own image (mariadb-backup matches the server).
	BinDir = "/replicant/bin"
	// ImageBinary is where the replicant image keeps its binary.
	ImageBinary = "/usr/local/bin/replicant"
	// ConfDir is the include directory both official images read (mariadb and mysql).
	ConfDir = "/etc/mysql/conf.d"
	// DataDir is the server's datadir; the database container must mount a volume here.
	DataDir = "/var/lib/mysql"
	// staging paths inside replicant-config: the fragment is written to confStaging, the
	// user's own conf.d volume (if they mounted one at ConfDir) is read at userConfStaging.
	confStaging     = "/replicant/conf"
	userConfStaging = "/replicant/user-conf"

	SidecarPort     = 8080
	SidecarPortName = "replicant-http"
	// PreStopPath is the sidecar endpoint the server container's preStop hook calls.
	PreStopPath = "/pre-stop"
)

// Keys of the credentials Secret that pods read. The controller creates the Secret.
const (
	SecretKeyAdminUser      = "admin-user"
	SecretKeyAdminPassword  = "admin-password"
	SecretKeyBackupUser     = "backup-user"
	SecretKeyBackupPassword = "backup-password"
	// The replication account: a MySQL clone logs in to its donor with it.
	SecretKeyReplicationUser     = "replication-user"
	SecretKeyReplicationPassword = "replication-password"
)

// Config is what the webhook knows that the StatefulSet does not.
type Config struct {
	// Image is the replicant image the install step copies the binary from.
	Image           string
	ImagePullPolicy corev1.PullPolicy
	// Version is recorded in AnnInjected.
	Version string
}

var reservedContainers = map[string]bool{
	ContainerInstall: true, ContainerConfig: true, ContainerClone: true, ContainerSidecar: true,
}

var reservedVolumes = map[string]bool{VolumeBin: true, VolumeConf: true, VolumeState: true, VolumeScratch: true}

// StateConfigMap is the name of the controller's state ConfigMap of a StatefulSet.
func StateConfigMap(sts string) string { return sts + "-replicant-state" }

func isReservedName(name string) bool { return reservedContainers[name] }

// isOurs recognises a container replicant injected: a reserved name running
// "replicant sidecar ...". A user's container that merely has the name is not ours.
func isOurs(c *corev1.Container) bool {
	return reservedContainers[c.Name] && len(c.Command) >= 2 &&
		path.Base(c.Command[0]) == "replicant" && c.Command[1] == "sidecar"
}

// Enabled reports whether sts opted in.
func Enabled(sts *appsv1.StatefulSet) bool { return sts.Labels[LabelInject] == InjectEnabled }

// Mutate returns the StatefulSet as replicant manages it: injected when it carries
// the opt-in label, stripped of any earlier injection when it does not (opting out
// gives back the plain StatefulSet). sts is not modified. A refusal is a Problems
// error naming every bad annotation or conflict; warnings name the annotations
// accepted but not acted on by this release (Options.NotActedOn).
func Mutate(sts *appsv1.StatefulSet, cfg Config) (mutated *appsv1.StatefulSet, warnings []string, err error) {
	out := sts.DeepCopy()
	if err := strip(&out.Spec.Template, out.Name); err != nil {
		return nil, nil, err
	}
	if !Enabled(out) {
		if err := restoreUpdateStrategy(out); err != nil {
			return nil, nil, err
		}
		return out, nil, nil
	}
	opts, err := ParseOptions(out)
	if err != nil {
		return nil, nil, err
	}
	if err := add(out, opts, cfg); err != nil {
		return nil, nil, err
	}
	rollByController(out)
	return out, opts.NotActedOn(), nil
}

// rollByController sets the OnDelete update strategy, keeping the user's own in an
// annotation: the controller rolls the pods itself, replicas first, each once the
// last one replicates again, and the master last, after handing it over. The
// StatefulSet controller's RollingUpdate would roll by ordinal, the master whenever
// its turn comes, and wait only for readiness.
func rollByController(sts *appsv1.StatefulSet) {
	if sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return
	}
	users, _ := json.Marshal(sts.Spec.UpdateStrategy)
	if sts.Annotations == nil {
		sts.Annotations = map[string]string{}
	}
	sts.Annotations[AnnUserUpdateStrategy] = string(users)
	sts.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
}

// restoreUpdateStrategy puts back the update strategy rollByController replaced.
func restoreUpdateStrategy(sts *appsv1.StatefulSet) error {
	saved, ok := sts.Annotations[AnnUserUpdateStrategy]
	if !ok {
		return nil
	}
	var users appsv1.StatefulSetUpdateStrategy
	if err := json.Unmarshal([]byte(saved), &users); err != nil {
		return Problems{fmt.Sprintf("annotation %s: %q is not an update strategy (%v); remove it, or set it to the StatefulSet's own, e.g. {\"type\":\"RollingUpdate\"}", AnnUserUpdateStrategy, saved, err)}
	}
	if sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		sts.Spec.UpdateStrategy = users
	}
	delete(sts.Annotations, AnnUserUpdateStrategy)
	return nil
}

// isOurPreStop recognises the preStop hook add injects.
func isOurPreStop(l *corev1.Lifecycle) bool {
	return l != nil && l.PreStop != nil && l.PreStop.HTTPGet != nil &&
		l.PreStop.HTTPGet.Path == PreStopPath && l.PreStop.HTTPGet.Port == intstr.FromInt32(SidecarPort)
}

// strip removes every part replicant injected and puts back the user's own conf.d
// mount that injection had moved aside.
func strip(tpl *corev1.PodTemplateSpec, stsName string) error {
	var problems Problems
	spec := &tpl.Spec
	var movedConf *corev1.VolumeMount

	keep := func(list []corev1.Container) []corev1.Container {
		var kept []corev1.Container
		for i := range list {
			c := &list[i]
			if !reservedContainers[c.Name] {
				kept = append(kept, *c)
				continue
			}
			if !isOurs(c) {
				problems.add("container %s already exists in the pod template and was not injected by replicant; the names %s are reserved, rename it",
					c.Name, reservedList())
				kept = append(kept, *c)
				continue
			}
			for _, m := range c.VolumeMounts {
				if c.Name == ContainerConfig && m.MountPath == userConfStaging {
					moved := m
					movedConf = &moved
				}
			}
		}
		return kept
	}
	spec.InitContainers = keep(spec.InitContainers)
	spec.Containers = keep(spec.Containers)

	var volumes []corev1.Volume
	for _, v := range spec.Volumes {
		if !reservedVolumes[v.Name] {
			volumes = append(volumes, v)
			continue
		}
		injected := v.EmptyDir != nil
		if v.Name == VolumeState {
			injected = v.ConfigMap != nil && v.ConfigMap.Name == StateConfigMap(stsName)
		}
		if !injected {
			problems.add("volume %s already exists in the pod template and was not injected by replicant; the names %s, %s, %s, %s are reserved, rename it",
				v.Name, VolumeBin, VolumeConf, VolumeState, VolumeScratch)
			volumes = append(volumes, v)
		}
	}
	spec.Volumes = volumes
	if len(problems) > 0 {
		return problems
	}

	for ci := range spec.Containers {
		c := &spec.Containers[ci]
		var mounts []corev1.VolumeMount
		for _, m := range c.VolumeMounts {
			switch {
			case !reservedVolumes[m.Name]:
				mounts = append(mounts, m)
			case m.Name == VolumeConf && m.MountPath == ConfDir && movedConf != nil:
				restored := *movedConf
				restored.MountPath = ConfDir
				mounts = append(mounts, restored)
			}
		}
		c.VolumeMounts = mounts
		if isOurPreStop(c.Lifecycle) {
			c.Lifecycle.PreStop = nil
			if *c.Lifecycle == (corev1.Lifecycle{}) {
				c.Lifecycle = nil
			}
		}
	}
	delete(tpl.Labels, LabelCluster)
	delete(tpl.Annotations, AnnInjected)
	if len(tpl.Labels) == 0 {
		tpl.Labels = nil
	}
	if len(tpl.Annotations) == 0 {
		tpl.Annotations = nil
	}
	return nil
}

// add injects into a stripped, opted-in StatefulSet.
func add(sts *appsv1.StatefulSet, opts Options, cfg Config) error {
	var problems Problems
	if c := findContainer(sts.Spec.Template.Spec.Containers, opts.Container); opts.Flavor == FlavorMySQL && c >= 0 {
		if tooOld := mysqlTooOld(sts.Spec.Template.Spec.Containers[c].Image); tooOld != "" {
			problems.add("container %s: image %q runs MySQL %s; replicant needs MySQL 8.0.23 or later (CHANGE REPLICATION SOURCE TO, SHOW REPLICA STATUS; 8.4 or 9.7 LTS recommended)",
				opts.Container, sts.Spec.Template.Spec.Containers[c].Image, tooOld)
		}
	}
	if sts.Spec.ServiceName == "" {
		problems.add("spec.serviceName is empty: replicant addresses servers as <pod>.<serviceName>.<namespace>, so the StatefulSet needs its headless Service")
	}
	spec := &sts.Spec.Template.Spec
	dbIndex := findContainer(spec.Containers, opts.Container)
	db := &spec.Containers[dbIndex]
	dataMount := -1
	for i, m := range db.VolumeMounts {
		if path.Clean(m.MountPath) == DataDir {
			dataMount = i
		}
	}
	if dataMount < 0 {
		problems.add("container %s mounts no volume at %s: replicant needs the datadir on a volume (volumeClaimTemplates) so that it survives restarts and can be cloned",
			db.Name, DataDir)
	}
	if cfg.Image == "" {
		problems.add("the webhook has no replicant image configured")
	}
	if len(problems) > 0 {
		return problems
	}
	datadir := db.VolumeMounts[dataMount]
	datadir.MountPath = DataDir

	// Take over the conf.d include directory; a volume the user mounted there is read
	// by replicant-config and its files are copied in before replicant's own fragment.
	confMount := corev1.VolumeMount{Name: VolumeConf, MountPath: ConfDir}
	var userConf *corev1.VolumeMount
	replaced := false
	for i, m := range db.VolumeMounts {
		if path.Clean(m.MountPath) == ConfDir {
			moved := m
			moved.MountPath = userConfStaging
			moved.ReadOnly = true
			userConf = &moved
			db.VolumeMounts[i] = confMount
			replaced = true
		}
	}
	if !replaced {
		db.VolumeMounts = append(db.VolumeMounts, confMount)
	}
	// Deleting the master's pod (or scaling it away) becomes a graceful takeover: the
	// server stops only once the controller made it read-only (sidecar /pre-stop). A
	// user's own preStop hook is kept, and then this one is not added.
	if db.Lifecycle == nil || db.Lifecycle.PreStop == nil {
		if db.Lifecycle == nil {
			db.Lifecycle = &corev1.Lifecycle{}
		}
		db.Lifecycle.PreStop = &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{
			// By number: kubelet resolves a hook's named port among this container's
			// own ports, and the name belongs to the sidecar.
			Path: PreStopPath, Port: intstr.FromInt32(SidecarPort)}}
	}

	pod := podEnv(sts)
	args := []string{
		"--flavor=" + string(opts.Flavor),
		"--server-id-offset=" + strconv.FormatInt(opts.ServerIDOffset, 10),
		"--durability=" + string(opts.Durability),
	}
	binMount := corev1.VolumeMount{Name: VolumeBin, MountPath: BinDir, ReadOnly: true}
	serverContainer := func(name string, sub []string, env []corev1.EnvVar, mounts []corev1.VolumeMount) corev1.Container {
		return corev1.Container{
			Name:            name,
			Image:           db.Image,
			ImagePullPolicy: db.ImagePullPolicy,
			Command:         append([]string{path.Join(BinDir, "replicant"), "sidecar"}, sub...),
			Env:             env,
			VolumeMounts:    mounts,
			SecurityContext: db.SecurityContext.DeepCopy(),
		}
	}

	configMounts := []corev1.VolumeMount{binMount, {Name: VolumeConf, MountPath: confStaging}}
	if userConf != nil {
		configMounts = append(configMounts, *userConf)
	}
	configArgs := append([]string{"config", "--conf-dir=" + confStaging}, args...)
	if userConf != nil {
		configArgs = append(configArgs, "--user-conf-dir="+userConfStaging)
	}
	config := serverContainer(ContainerConfig, configArgs, pod, configMounts)
	config.Resources = smallResources()

	cloneArgs := append([]string{"clone", "--datadir=" + DataDir, "--state-file=" + path.Join(StateDir, StateKey)}, args...)
	if opts.InitURI != "" {
		cloneArgs = append(cloneArgs, "--init-uri="+opts.InitURI)
	}
	if opts.RestoreTo != "" {
		cloneArgs = append(cloneArgs, "--restore-to="+opts.RestoreTo)
	}
	clone := serverContainer(ContainerClone, cloneArgs, slices.Concat(pod, credentialEnv(opts)),
		// conf.d is writable: on "start empty" the clone rewrites the fragment for the
		// image's initialisation (a flavor's ImageInitOverrides).
		[]corev1.VolumeMount{binMount, datadir, {Name: VolumeConf, MountPath: ConfDir},
			// Pod 0 starts an empty server only when this says the cluster never had a master.
			{Name: VolumeState, MountPath: StateDir, ReadOnly: true}})
	if opts.InitURI != "" && opts.BackupSecret != "" {
		// A restore reads the bucket with the credentials the cloud's SDK finds in its
		// environment (AWS_ACCESS_KEY_ID…, AZURE_STORAGE_ACCOUNT…): the Secret's keys.
		clone.EnvFrom = []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: opts.BackupSecret}}}}
	}
	// The clone prepares a backup (mariadb-backup --prepare); it may use what the server may.
	clone.Resources = *db.Resources.DeepCopy()

	sidecarData := datadir
	sidecarData.ReadOnly = true
	serveArgs := append([]string{"serve", "--datadir=" + DataDir, "--listen=:" + strconv.Itoa(SidecarPort)}, args...)
	sidecarMounts := []corev1.VolumeMount{binMount, sidecarData, {Name: VolumeConf, MountPath: ConfDir, ReadOnly: true}}
	if opts.Flavor == FlavorMySQL {
		// A MySQL backup is the server's CLONE LOCAL into a directory of this shared
		// emptyDir (world-writable, so the server's user may create it), which the
		// sidecar streams and removes.
		scratch := corev1.VolumeMount{Name: VolumeScratch, MountPath: ScratchDir}
		db.VolumeMounts = append(db.VolumeMounts, scratch)
		sidecarMounts = append(sidecarMounts, scratch)
		serveArgs = append(serveArgs, "--scratch-dir="+ScratchDir)
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: VolumeScratch, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	// The sidecar alone also gets the admin account: it fences its server when the
	// controller's write lease runs out (an isolated master).
	sidecar := serverContainer(ContainerSidecar, serveArgs, slices.Concat(pod, credentialEnv(opts), adminEnv(opts)), sidecarMounts)
	sidecar.Ports = []corev1.ContainerPort{{Name: SidecarPortName, ContainerPort: SidecarPort, Protocol: corev1.ProtocolTCP}}
	sidecar.LivenessProbe = &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/healthz", Port: intstr.FromString(SidecarPortName),
		}},
		PeriodSeconds:    10,
		FailureThreshold: 3,
	}
	sidecar.Resources = corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("50m"),
		corev1.ResourceMemory: resource.MustParse("64Mi"),
	}}

	install := corev1.Container{
		Name:            ContainerInstall,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Command:         []string{ImageBinary, "sidecar", "install", "--dest=" + BinDir},
		VolumeMounts:    []corev1.VolumeMount{{Name: VolumeBin, MountPath: BinDir}},
		Resources:       smallResources(),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			RunAsUser:                ptr.To(int64(65532)),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}

	spec.InitContainers = append([]corev1.Container{install, config, clone}, spec.InitContainers...)
	spec.Containers = append(spec.Containers, sidecar)
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: VolumeBin, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: VolumeConf, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: VolumeState, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: StateConfigMap(sts.Name)}, Optional: ptr.To(true)}}},
	)

	tpl := &sts.Spec.Template
	if tpl.Labels == nil {
		tpl.Labels = map[string]string{}
	}
	tpl.Labels[LabelCluster] = sts.Name
	if tpl.Annotations == nil {
		tpl.Annotations = map[string]string{}
	}
	tpl.Annotations[AnnInjected] = cfg.Version + "/" + injectedHash(tpl)
	return nil
}

// podEnv is what every server-image container learns about its pod.
func podEnv(sts *appsv1.StatefulSet) []corev1.EnvVar {
	field := func(name, fieldPath string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: fieldPath},
		}}
	}
	return []corev1.EnvVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		{Name: "REPLICANT_STATEFULSET", Value: sts.Name},
		{Name: "REPLICANT_SERVICE", Value: sts.Spec.ServiceName},
	}
}

// credentialEnv gives the backup credentials to the containers that stream backups
// (the sidecar serves them, the clone fetches them). Pods wait for the Secret, which
// the controller creates, rather than start without credentials.
func credentialEnv(opts Options) []corev1.EnvVar {
	env := []corev1.EnvVar{
		secretEnv(opts, "REPLICANT_BACKUP_USER", SecretKeyBackupUser),
		secretEnv(opts, "REPLICANT_BACKUP_PASSWORD", SecretKeyBackupPassword),
	}
	if opts.Flavor == FlavorMySQL {
		// MySQL's CLONE plugin logs in to the donor's server itself.
		env = append(env, secretEnv(opts, "REPLICANT_REPLICATION_USER", SecretKeyReplicationUser),
			secretEnv(opts, "REPLICANT_REPLICATION_PASSWORD", SecretKeyReplicationPassword))
	}
	return env
}

// mysqlTooOld is the version an image's tag names when it is older than 8.0.23 (the
// first with the statements replicant uses), else "". A tag that names no version
// (latest, a digest, a custom name) is not judged.
func mysqlTooOld(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	slash, colon := strings.LastIndex(image, "/"), strings.LastIndex(image, ":")
	if colon < 0 || colon < slash {
		return ""
	}
	tag := image[colon+1:]
	var parts [3]int
	fields := strings.SplitN(strings.SplitN(tag, "-", 2)[0], ".", 3)
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil {
			return ""
		}
		parts[i] = n
	}
	major, minor, patch := parts[0], parts[1], parts[2]
	// "8.0" names the newest 8.0 patch, which is recent enough.
	old := major < 8 || (major == 8 && minor == 0 && len(fields) == 3 && patch < 23)
	if !old {
		return ""
	}
	return strings.Join(fields, ".")
}

// adminEnv gives replicant's admin account to the sidecar.
func adminEnv(opts Options) []corev1.EnvVar {
	return []corev1.EnvVar{
		secretEnv(opts, "REPLICANT_ADMIN_USER", SecretKeyAdminUser),
		secretEnv(opts, "REPLICANT_ADMIN_PASSWORD", SecretKeyAdminPassword),
	}
}

func secretEnv(opts Options, name, key string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: opts.CredentialsSecret},
			Key:                  key,
		},
	}}
}

func smallResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("10m"),
		corev1.ResourceMemory: resource.MustParse("32Mi"),
	}}
}

// injectedHash fingerprints what replicant put into the template, so that the
// recorded AnnInjected changes exactly when the injected part does.
func injectedHash(tpl *corev1.PodTemplateSpec) string {
	var parts struct {
		Init, Containers []corev1.Container
		Volumes          []corev1.Volume
		Cluster          string
	}
	for _, c := range tpl.Spec.InitContainers {
		if reservedContainers[c.Name] {
			parts.Init = append(parts.Init, c)
		}
	}
	for _, c := range tpl.Spec.Containers {
		if reservedContainers[c.Name] {
			parts.Containers = append(parts.Containers, c)
		} else {
			// The user's containers only count for the mounts replicant added to them.
			var ours []corev1.VolumeMount
			for _, m := range c.VolumeMounts {
				if reservedVolumes[m.Name] {
					ours = append(ours, m)
				}
			}
			if len(ours) > 0 {
				parts.Containers = append(parts.Containers, corev1.Container{Name: c.Name, VolumeMounts: ours})
			}
		}
	}
	for _, v := range tpl.Spec.Volumes {
		if reservedVolumes[v.Name] {
			parts.Volumes = append(parts.Volumes, v)
		}
	}
	parts.Cluster = tpl.Labels[LabelCluster]
	b, err := json.Marshal(parts)
	if err != nil {
		panic(fmt.Sprintf("marshal injected parts: %v", err)) // plain structs always marshal
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

func reservedList() string {
	return ContainerInstall + ", " + ContainerConfig + ", " + ContainerClone + ", " + ContainerSidecar
}
