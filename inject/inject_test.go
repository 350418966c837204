package inject

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var testConfig = Config{Image: "replicant:v0.1.0", ImagePullPolicy: corev1.PullIfNotPresent, Version: "v0.1.0"}

// userStatefulSet is the plain MariaDB StatefulSet a user already runs.
func userStatefulSet() *appsv1.StatefulSet {
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: "db", Namespace: "default",
			Labels: map[string]string{LabelInject: InjectEnabled, "app": "db"},
		},
		Spec: appsv1.StatefulSetSpec{
			ServiceName: "mysql",
			Selector:    &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{Name: "user-init", Image: "busybox"}},
					Containers: []corev1.Container{{
						Name:  "mariadb",
						Image: "mariadb:10.11",
						Env:   []corev1.EnvVar{{Name: "MARIADB_ROOT_PASSWORD", Value: "x"}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "data", MountPath: "/var/lib/mysql"},
						},
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceMemory: resource.MustParse("512Mi"),
						}},
						SecurityContext: &corev1.SecurityContext{RunAsUser: ptrTo(int64(999))},
					}},
				},
			},
		},
	}
}

func ptrTo[T any](v T) *T { return &v }

func mustMutate(t *testing.T, sts *appsv1.StatefulSet, cfg Config) *appsv1.StatefulSet {
	t.Helper()
	out, _, err := Mutate(sts, cfg)
	if err != nil {
		t.Fatalf("Mutate: %v", err)
	}
	return out
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	if i := findContainer(cs, name); i >= 0 {
		return cs[i]
	}
	t.Fatalf("no container %s in %v", name, names(cs))
	return corev1.Container{}
}

func mountAt(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func envNames(c corev1.Container) []string {
	var out []string
	for _, e := range c.Env {
		out = append(out, e.Name)
	}
	return out
}

func TestMutateInjectsWhatTheDesignNames(t *testing.T) {
	in := userStatefulSet()
	out := mustMutate(t, in, testConfig)
	spec := out.Spec.Template.Spec

	if got, want := names(spec.InitContainers), []string{ContainerInstall, ContainerConfig, ContainerClone, "user-init"}; !reflect.DeepEqual(got, want) {
		t.Errorf("init containers = %v, want %v", got, want)
	}
	if got, want := names(spec.Containers), []string{"mariadb", ContainerSidecar}; !reflect.DeepEqual(got, want) {
		t.Errorf("containers = %v, want %v", got, want)
	}
	var vols []string
	for _, v := range spec.Volumes {
		switch {
		case v.Name == VolumeState:
			if cm := v.ConfigMap; cm == nil || cm.Name != "db-replicant-state" || cm.Optional == nil || !*cm.Optional {
				t.Errorf("volume %s = %+v, want the optional ConfigMap db-replicant-state", v.Name, v.VolumeSource)
			}
		case v.EmptyDir == nil:
			t.Errorf("volume %s is not an emptyDir", v.Name)
		}
		vols = append(vols, v.Name)
	}
	if want := []string{VolumeBin, VolumeConf, VolumeState}; !reflect.DeepEqual(vols, want) {
		t.Errorf("volumes = %v, want %v", vols, want)
	}

	install := container(t, spec.InitContainers, ContainerInstall)
	if install.Image != testConfig.Image || install.Command[0] != ImageBinary {
		t.Errorf("install runs %s %v, want the replicant image and %s", install.Image, install.Command, ImageBinary)
	}
	if install.SecurityContext == nil || !*install.SecurityContext.RunAsNonRoot {
		t.Errorf("install must run as non-root")
	}

	wantSub := map[string]string{ContainerConfig: "config", ContainerClone: "clone", ContainerSidecar: "serve"}
	for name, sub := range wantSub {
		c := container(t, append(spec.InitContainers, spec.Containers...), name)
		if c.Image != "mariadb:10.11" {
			t.Errorf("%s image = %s, want the server image", name, c.Image)
		}
		if c.Command[0] != "/replicant/bin/replicant" || c.Command[1] != "sidecar" || c.Command[2] != sub {
			t.Errorf("%s command = %v, want replicant sidecar %s", name, c.Command, sub)
		}
		if c.SecurityContext == nil || *c.SecurityContext.RunAsUser != 999 {
			t.Errorf("%s does not run as the server's user", name)
		}
		if _, ok := mountAt(c, BinDir); !ok {
			t.Errorf("%s does not mount %s", name, BinDir)
		}
		env := strings.Join(envNames(c), ",")
		if !strings.Contains(env, "POD_NAME,POD_NAMESPACE,REPLICANT_STATEFULSET,REPLICANT_SERVICE") {
			t.Errorf("%s env = %s", name, env)
		}
		if strings.Contains(strings.Join(c.Command, " "), "--server-id-offset=100") == false {
			t.Errorf("%s command %v lacks the default server-id offset", name, c.Command)
		}
	}

	clone := container(t, spec.InitContainers, ContainerClone)
	if m, ok := mountAt(clone, DataDir); !ok || m.Name != "data" || m.ReadOnly {
		t.Errorf("clone datadir mount = %+v, want the user's data volume read-write", m)
	}
	if m, ok := mountAt(clone, StateDir); !ok || m.Name != VolumeState || !m.ReadOnly {
		t.Errorf("clone state mount = %+v, want %s read-only", m, VolumeState)
	}
	if !slices.Contains(clone.Command, "--state-file=/replicant/state/state") {
		t.Errorf("clone command %v lacks --state-file", clone.Command)
	}
	if !reflect.DeepEqual(clone.Resources, in.Spec.Template.Spec.Containers[0].Resources) {
		t.Errorf("clone resources = %v, want the server's", clone.Resources)
	}
	sidecar := container(t, spec.Containers, ContainerSidecar)
	if m, ok := mountAt(sidecar, DataDir); !ok || !m.ReadOnly {
		t.Errorf("sidecar datadir mount = %+v, want read-only", m)
	}
	if len(sidecar.Ports) != 1 || sidecar.Ports[0].ContainerPort != 8080 {
		t.Errorf("sidecar ports = %v, want 8080", sidecar.Ports)
	}
	var secretRefs []string
	for _, e := range sidecar.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			secretRefs = append(secretRefs, e.ValueFrom.SecretKeyRef.Name+"/"+e.ValueFrom.SecretKeyRef.Key)
		}
	}
	// The admin account only in the sidecar: it fences its server when the write
	// lease runs out.
	if want := []string{"db-replicant/backup-user", "db-replicant/backup-password", "db-replicant/admin-user", "db-replicant/admin-password"}; !reflect.DeepEqual(secretRefs, want) {
		t.Errorf("sidecar secret refs = %v, want %v", secretRefs, want)
	}

	db := container(t, spec.Containers, "mariadb")
	if m, ok := mountAt(db, ConfDir); !ok || m.Name != VolumeConf {
		t.Errorf("server container conf.d mount = %+v, want %s", m, VolumeConf)
	}
	if out.Spec.Template.Labels[LabelCluster] != "db" || out.Spec.Template.Labels["app"] != "db" {
		t.Errorf("template labels = %v", out.Spec.Template.Labels)
	}
	if ann := out.Spec.Template.Annotations[AnnInjected]; !strings.HasPrefix(ann, "v0.1.0/") || len(ann) != len("v0.1.0/")+16 {
		t.Errorf("%s = %q, want v0.1.0/<16 hex>", AnnInjected, ann)
	}
	if !equality.Semantic.DeepEqual(in, userStatefulSet()) {
		t.Errorf("Mutate modified its input")
	}
}

// TestMutateMySQL: a StatefulSet whose image says MySQL is injected like a MariaDB one;
// every replicant container is told the flavor, and the clone container, whose CLONE
// INSTANCE logs in to the donor itself, also gets the replication account.
func TestMutateMySQL(t *testing.T) {
	in := userStatefulSet()
	db := &in.Spec.Template.Spec.Containers[0]
	db.Name, db.Image = "mysql", "mysql:9.7"
	out := mustMutate(t, in, testConfig)
	spec := out.Spec.Template.Spec
	if got, want := names(spec.Containers), []string{"mysql", ContainerSidecar}; !reflect.DeepEqual(got, want) {
		t.Errorf("containers = %v, want %v", got, want)
	}
	for _, name := range []string{ContainerConfig, ContainerClone, ContainerSidecar} {
		c := container(t, append(spec.InitContainers, spec.Containers...), name)
		if !slices.Contains(c.Args, "--flavor=mysql") && !slices.Contains(c.Command, "--flavor=mysql") {
			t.Errorf("%s is not told the flavor: %v %v", name, c.Command, c.Args)
		}
	}
	env := map[string]bool{}
	for _, e := range container(t, spec.InitContainers, ContainerClone).Env {
		env[e.Name] = e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil
	}
	for _, name := range []string{"REPLICANT_REPLICATION_USER", "REPLICANT_REPLICATION_PASSWORD"} {
		if !env[name] {
			t.Errorf("clone container: %s is not taken from the credentials Secret (env %v)", name, env)
		}
	}
	// A backup is the server's CLONE LOCAL into a volume the sidecar streams from.
	for _, name := range []string{"mysql", ContainerSidecar} {
		if !slices.ContainsFunc(container(t, spec.Containers, name).VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == VolumeScratch && m.MountPath == ScratchDir && !m.ReadOnly
		}) {
			t.Errorf("%s does not mount %s at %s", name, VolumeScratch, ScratchDir)
		}
	}
	if sc := container(t, spec.Containers, ContainerSidecar); !slices.Contains(sc.Command, "--scratch-dir="+ScratchDir) {
		t.Errorf("the sidecar is not told the scratch directory: %v", sc.Command)
	}
	if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == VolumeScratch && v.EmptyDir != nil }) {
		t.Errorf("no %s emptyDir volume", VolumeScratch)
	}
	// Taken out again, nothing of it is left.
	out.Labels[LabelInject] = "disabled"
	stripped := mustMutate(t, out, testConfig)
	if v := stripped.Spec.Template.Spec.Volumes; len(v) != len(in.Spec.Template.Spec.Volumes) {
		t.Errorf("volumes left after opting out: %v", v)
	}
	if m := stripped.Spec.Template.Spec.Containers[0].VolumeMounts; !reflect.DeepEqual(m, in.Spec.Template.Spec.Containers[0].VolumeMounts) {
		t.Errorf("mounts left after opting out: %v", m)
	}
}

// TestMySQLBackupsAreAdmitted: a MySQL StatefulSet may have scheduled backups, binlog
// archiving and a restore to a point in time; its backup Job records the flavor.
func TestMySQLBackupsAreAdmitted(t *testing.T) {
	in := userStatefulSet()
	db := &in.Spec.Template.Spec.Containers[0]
	db.Name, db.Image = "mysql", "mysql:9.7"
	in.Annotations = map[string]string{AnnBackupURI: "s3://b/p", AnnBackupSchedule: "0 3 * * *",
		AnnInitURI: "s3://b/p/default/db", AnnRestoreTo: "2026-12-04T10:30:00Z", AnnBinlogArchiveInterval: "5m"}
	out := mustMutate(t, in, testConfig)
	clone := container(t, out.Spec.Template.Spec.InitContainers, ContainerClone)
	if !slices.Contains(clone.Command, "--init-uri=s3://b/p/default/db") || !slices.Contains(clone.Command, "--restore-to=2026-12-04T10:30:00Z") {
		t.Errorf("the clone step is not told the init-uri and the point: %v", clone.Command)
	}
	opts, err := ParseOptions(out)
	if err != nil {
		t.Fatal(err)
	}
	job := BackupCronJobSpec(out, opts, testConfig).JobTemplate.Spec.Template.Spec.Containers[0]
	if !slices.Contains(job.Command, "--flavor=mysql") {
		t.Errorf("the backup Job does not record the flavor: %v", job.Command)
	}
}

func TestMutateIsIdempotent(t *testing.T) {
	once := mustMutate(t, userStatefulSet(), testConfig)
	twice := mustMutate(t, once, testConfig)
	if !equality.Semantic.DeepEqual(once, twice) {
		t.Fatalf("second pass changed the StatefulSet:\nonce:  %+v\ntwice: %+v", once.Spec.Template, twice.Spec.Template)
	}
}

func TestUnrelatedChangeKeepsInjectedPart(t *testing.T) {
	once := mustMutate(t, userStatefulSet(), testConfig)
	edited := once.DeepCopy()
	edited.Spec.Replicas = ptrTo(int32(5))
	edited.Annotations = map[string]string{"team": "payments", AnnMaxLag: "1m"}
	again := mustMutate(t, edited, testConfig)
	if !equality.Semantic.DeepEqual(once.Spec.Template, again.Spec.Template) {
		t.Fatalf("an unrelated change changed the pod template")
	}
}

func TestNewReplicantImageChangesOnlyTheInstallStep(t *testing.T) {
	old := mustMutate(t, userStatefulSet(), testConfig)
	cfg := testConfig
	cfg.Image, cfg.Version = "replicant:v0.2.0", "v0.2.0"
	upgraded := mustMutate(t, old, cfg)
	if got := container(t, upgraded.Spec.Template.Spec.InitContainers, ContainerInstall).Image; got != cfg.Image {
		t.Errorf("install image = %s, want %s", got, cfg.Image)
	}
	if old.Spec.Template.Annotations[AnnInjected] == upgraded.Spec.Template.Annotations[AnnInjected] {
		t.Errorf("the injected hash did not change with the image")
	}
	if len(upgraded.Spec.Template.Spec.InitContainers) != 4 || len(upgraded.Spec.Template.Spec.Containers) != 2 {
		t.Errorf("upgrade duplicated containers: %v / %v", names(upgraded.Spec.Template.Spec.InitContainers), names(upgraded.Spec.Template.Spec.Containers))
	}
}

func TestServerImageUpdateIsFollowed(t *testing.T) {
	old := mustMutate(t, userStatefulSet(), testConfig)
	old.Spec.Template.Spec.Containers[0].Image = "mariadb:11.4"
	updated := mustMutate(t, old, testConfig)
	for _, name := range []string{ContainerConfig, ContainerClone, ContainerSidecar} {
		c := container(t, append(updated.Spec.Template.Spec.InitContainers, updated.Spec.Template.Spec.Containers...), name)
		if c.Image != "mariadb:11.4" {
			t.Errorf("%s image = %s, want mariadb:11.4", name, c.Image)
		}
	}
}

func TestOptOutGivesBackThePlainStatefulSet(t *testing.T) {
	in := userStatefulSet()
	injected := mustMutate(t, in, testConfig)
	injected.Labels[LabelInject] = "disabled"
	out := mustMutate(t, injected, testConfig)
	want := userStatefulSet()
	want.Labels[LabelInject] = "disabled"
	if !equality.Semantic.DeepEqual(out, want) {
		t.Fatalf("opt-out left injected parts:\n got %+v\nwant %+v", out.Spec.Template, want.Spec.Template)
	}
}

func TestUserConfDirIsMovedAsideAndRestored(t *testing.T) {
	in := userStatefulSet()
	in.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "my-cnf", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "my-cnf"}},
	}}}
	db := &in.Spec.Template.Spec.Containers[0]
	db.VolumeMounts = append(db.VolumeMounts, corev1.VolumeMount{Name: "my-cnf", MountPath: "/etc/mysql/conf.d"})

	out := mustMutate(t, in, testConfig)
	dbOut := container(t, out.Spec.Template.Spec.Containers, "mariadb")
	if m, _ := mountAt(dbOut, ConfDir); m.Name != VolumeConf {
		t.Errorf("server conf.d = %s, want %s", m.Name, VolumeConf)
	}
	config := container(t, out.Spec.Template.Spec.InitContainers, ContainerConfig)
	if m, ok := mountAt(config, userConfStaging); !ok || m.Name != "my-cnf" || !m.ReadOnly {
		t.Errorf("config does not read the user's conf.d: %+v", m)
	}
	if !strings.Contains(strings.Join(config.Command, " "), "--user-conf-dir="+userConfStaging) {
		t.Errorf("config command %v does not name the user's conf.d", config.Command)
	}
	if again := mustMutate(t, out, testConfig); !equality.Semantic.DeepEqual(out, again) {
		t.Errorf("second pass changed the template")
	}
	out.Labels[LabelInject] = "no"
	back := mustMutate(t, out, testConfig)
	if m, _ := mountAt(back.Spec.Template.Spec.Containers[0], ConfDir); m.Name != "my-cnf" {
		t.Errorf("opt-out did not restore the user's conf.d mount: %+v", m)
	}
}

func TestUnlabelledIsUntouched(t *testing.T) {
	in := userStatefulSet()
	delete(in.Labels, LabelInject)
	in.Annotations = map[string]string{AnnFlavor: "postgres"} // not validated when not opted in
	out := mustMutate(t, in, testConfig)
	if !equality.Semantic.DeepEqual(in, out) {
		t.Fatalf("an unlabelled StatefulSet was changed")
	}
}

// TestRefusals: every refusal names what is wrong, the value, and what is allowed.
func TestRefusals(t *testing.T) {
	cases := []struct {
		name   string
		change func(*appsv1.StatefulSet)
		want   []string
	}{
		{"unknown flavor", ann(AnnFlavor, "postgres"), []string{AnnFlavor, `"postgres"`, "mariadb or mysql"}},
		{"mysql too old", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Containers[0].Image = "registry.example.com/mysql:5.7.44"
			ann(AnnFlavor, "mysql")(s)
		}, []string{"image \"registry.example.com/mysql:5.7.44\"", "MySQL 5.7.44", "8.0.23 or later"}},
		{"negative offset", ann(AnnServerIDOffset, "-1"), []string{AnnServerIDOffset, `"-1"`, "an integer from 1 to"}},
		{"zero offset", ann(AnnServerIDOffset, "0"), []string{AnnServerIDOffset, `"0"`}},
		{"offset too large", ann(AnnServerIDOffset, "4294967295"), []string{AnnServerIDOffset, `"4294967295"`}},
		{"offset not a number", ann(AnnServerIDOffset, "ten"), []string{AnnServerIDOffset, `"ten"`}},
		{"lag not a duration", ann(AnnMaxLag, "30"), []string{AnnMaxLag, `"30"`, "such as 30s"}},
		{"lag too small", ann(AnnMaxLag, "10ms"), []string{AnnMaxLag, `"10ms"`, "at least 1s"}},
		{"unknown failover mode", ann(AnnFailover, "yes"), []string{AnnFailover, `"yes"`, "auto or manual"}},
		{"unknown durability", ann(AnnDurability, "sync"), []string{AnnDurability, `"sync"`, "semi-sync or async"}},
		{"bad secret name", ann(AnnCredentialsSecret, "Not_A_Name"), []string{AnnCredentialsSecret, `"Not_A_Name"`, "a Secret name"}},
		{"bad backup secret", ann(AnnBackupSecret, "x/y"), []string{AnnBackupSecret, `"x/y"`}},
		{"bad backup uri", ann(AnnBackupURI, "ftp://host/x"), []string{AnnBackupURI, `"ftp://host/x"`, "s3://"}},
		{"bad init uri", ann(AnnInitURI, "/local/file"), []string{AnnInitURI, `"/local/file"`, "gs://"}},
		{"bad restore point", ann(AnnRestoreTo, "yesterday"), []string{AnnRestoreTo, `"yesterday"`, "RFC 3339", "GTID position"}},
		{"a MySQL GTID set on MariaDB", func(s *appsv1.StatefulSet) {
			ann(AnnInitURI, "s3://b/p/default/db")(s)
			ann(AnnRestoreTo, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")(s)
		}, []string{AnnRestoreTo, `"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5"`, "MariaDB's such as 0-100-2045"}},
		{"a MariaDB position on MySQL", func(s *appsv1.StatefulSet) {
			ann(AnnFlavor, "mysql")(s)
			ann(AnnInitURI, "s3://b/p/default/db")(s)
			ann(AnnRestoreTo, "0-100-5")(s)
		}, []string{AnnRestoreTo, `"0-100-5"`, "MySQL's GTID set"}},
		{"restore point without init-uri", ann(AnnRestoreTo, "2026-12-04T10:30:00Z"), []string{AnnRestoreTo, AnnInitURI, "is not"}},
		{"archive interval not whole minutes", func(s *appsv1.StatefulSet) {
			ann(AnnBackupURI, "s3://b/p")(s)
			ann(AnnBackupSchedule, "@daily")(s)
			ann(AnnBinlogArchiveInterval, "90s")(s)
		}, []string{AnnBinlogArchiveInterval, `"90s"`, "whole minutes from 1m to 60m"}},
		{"archive interval without a schedule", ann(AnnBinlogArchiveInterval, "5m"), []string{AnnBinlogArchiveInterval, AnnBackupSchedule, "is not"}},
		{"bad schedule", ann(AnnBackupSchedule, "every day"), []string{AnnBackupSchedule, `"every day"`, "cron schedule"}},
		{"schedule without uri", ann(AnnBackupSchedule, "@daily"), []string{AnnBackupSchedule, AnnBackupURI, "needs a bucket"}},
		{"bad retention", ann(AnnBackupRetention, "0"), []string{AnnBackupRetention, `"0"`, "a count"}},
		{"typo in annotation name", ann(Prefix+"failovr", "auto"), []string{Prefix + "failovr", "not a replicant annotation", AnnFailover}},
		{"container does not exist", ann(AnnContainer, "db"), []string{AnnContainer, `"db"`, "mariadb"}},
		{"ambiguous containers", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Containers[0].Name = "server"
			s.Spec.Template.Spec.Containers = append(s.Spec.Template.Spec.Containers, corev1.Container{Name: "exporter", Image: "exporter"})
		}, []string{"cannot tell which", AnnContainer, "server, exporter"}},
		{"unknown image flavor", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Containers[0].Image = "registry.local/db-server:1"
		}, []string{"cannot tell the flavor", `"registry.local/db-server:1"`, AnnFlavor}},
		{"foreign sidecar name", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Containers = append(s.Spec.Template.Spec.Containers, corev1.Container{Name: ContainerSidecar, Image: "busybox", Command: []string{"sleep"}})
		}, []string{"container replicant-sidecar already exists", "not injected by replicant", "rename it"}},
		{"foreign init name", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.InitContainers = append(s.Spec.Template.Spec.InitContainers, corev1.Container{Name: ContainerClone, Image: "busybox"})
		}, []string{"container replicant-clone already exists"}},
		{"foreign volume name", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Volumes = append(s.Spec.Template.Spec.Volumes, corev1.Volume{Name: VolumeConf, VolumeSource: corev1.VolumeSource{
				ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "x"}}}})
		}, []string{"volume replicant-conf already exists", "rename it"}},
		{"no datadir volume", func(s *appsv1.StatefulSet) {
			s.Spec.Template.Spec.Containers[0].VolumeMounts = nil
		}, []string{"mounts no volume at /var/lib/mysql"}},
		{"no headless service", func(s *appsv1.StatefulSet) { s.Spec.ServiceName = "" }, []string{"spec.serviceName is empty"}},
		{"several problems at once", func(s *appsv1.StatefulSet) {
			s.Annotations = map[string]string{AnnFailover: "maybe", AnnDurability: "never"}
		}, []string{AnnFailover, AnnDurability, "; "}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts := userStatefulSet()
			tc.change(sts)
			out, _, err := Mutate(sts, testConfig)
			if err == nil {
				t.Fatalf("accepted; template init containers %v", names(out.Spec.Template.Spec.InitContainers))
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not contain %q", err, w)
				}
			}
		})
	}
}

func ann(k, v string) func(*appsv1.StatefulSet) {
	return func(s *appsv1.StatefulSet) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

// Annotations accepted but not acted on by this release are named in warnings; the
// StatefulSet is still injected.
func TestNotActedOnAnnotationsAreWarnedAbout(t *testing.T) {
	cases := []struct {
		name        string
		annotations map[string]string
		want        []string // one substring per expected warning, in order
	}{
		{"none", nil, nil},
		{"acted-on annotations only", map[string]string{AnnFailover: "manual", AnnMaxLag: "1m", AnnDurability: "async"}, nil},
		{"a backup schedule", map[string]string{AnnBackupSchedule: "@daily", AnnBackupURI: "s3://b/p", AnnBackupRetention: "3", AnnBackupSecret: "c"}, nil},
		{"a backup Secret alone", map[string]string{AnnBackupSecret: "creds"}, []string{AnnBackupSecret + " has no effect without " + AnnBackupURI}},
		{"a retention alone", map[string]string{AnnBackupRetention: "3"}, []string{AnnBackupRetention + " has no effect"}},
		{"init-uri and its Secret", map[string]string{AnnInitURI: "s3://b/default/db/latest", AnnBackupSecret: "c"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sts := userStatefulSet()
			sts.Annotations = tc.annotations
			out, warnings, err := Mutate(sts, testConfig)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(out.Spec.Template.Spec.Containers); !slices.Contains(got, ContainerSidecar) {
				t.Errorf("not injected: containers %v", got)
			}
			if len(warnings) != len(tc.want) {
				t.Fatalf("warnings %q, want %d", warnings, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(warnings[i], w) {
					t.Errorf("warning %q does not contain %q", warnings[i], w)
				}
			}
		})
	}
}

func TestParseOptionsValuesAndDefaults(t *testing.T) {
	sts := userStatefulSet()
	opts, err := ParseOptions(sts)
	if err != nil {
		t.Fatal(err)
	}
	want := Options{Flavor: FlavorMariaDB, Container: "mariadb", ServerIDOffset: 100, Failover: FailoverAuto,
		Durability: DurabilitySemiSync, MaxLag: DefaultMaxLag, CredentialsSecret: "db-replicant"}
	if opts != want {
		t.Errorf("defaults = %+v, want %+v", opts, want)
	}

	sts.Annotations = map[string]string{
		AnnFlavor: "mariadb", AnnContainer: "mariadb", AnnServerIDOffset: "1000", AnnFailover: "manual",
		AnnDurability: "async", AnnMaxLag: "2m", AnnCredentialsSecret: "db-creds",
		AnnBackupSchedule: "0 3 * * *", AnnBackupURI: "s3://bucket/db", AnnBackupSecret: "bucket-creds",
		AnnBackupRetention: "7", AnnInitURI: "gs://bucket/db/latest.xbstream", AnnRestoreTo: "2026-12-04T10:30:00Z",
		AnnBinlogArchiveInterval: "10m", AnnMaster: "db-0", AnnTakeoverTo: "db-1", AnnLastOperation: "{}",
	}
	opts, err = ParseOptions(sts)
	if err != nil {
		t.Fatal(err)
	}
	want = Options{Flavor: FlavorMariaDB, Container: "mariadb", ServerIDOffset: 1000, Failover: FailoverManual,
		Durability: DurabilityAsync, MaxLag: 120e9, CredentialsSecret: "db-creds", BackupSchedule: "0 3 * * *",
		BackupURI: "s3://bucket/db", BackupSecret: "bucket-creds", BackupRetention: "7", InitURI: "gs://bucket/db/latest.xbstream",
		RestoreTo: "2026-12-04T10:30:00Z", BinlogArchiveInterval: 10 * time.Minute}
	if opts != want {
		t.Errorf("parsed = %+v, want %+v", opts, want)
	}
	// Scheduled backups archive binlogs every DefaultBinlogArchiveInterval unless told.
	for v, want := range map[string]time.Duration{"": DefaultBinlogArchiveInterval, "off": 0, "1m": time.Minute, "60m": time.Hour} {
		if v == "" {
			delete(sts.Annotations, AnnBinlogArchiveInterval)
		} else {
			sts.Annotations[AnnBinlogArchiveInterval] = v
		}
		if opts, err := ParseOptions(sts); err != nil || opts.BinlogArchiveInterval != want {
			t.Errorf("%s=%q: interval %v, %v", AnnBinlogArchiveInterval, v, opts.BinlogArchiveInterval, err)
		}
	}
}

func TestDefaultContainerIsTheOnlyOne(t *testing.T) {
	sts := userStatefulSet()
	sts.Spec.Template.Spec.Containers[0].Name = "server"
	opts, err := ParseOptions(sts)
	if err != nil || opts.Container != "server" {
		t.Fatalf("container = %q, %v; want server", opts.Container, err)
	}
}

func TestFlavorFromImage(t *testing.T) {
	cases := map[string]Flavor{
		"mariadb":       FlavorMariaDB,
		"mariadb:10.11": FlavorMariaDB,
		"docker.io/library/mariadb:11.4@sha256:abc": FlavorMariaDB,
		"quay.io/org/mariadb-server:10.6":           FlavorMariaDB,
		"mysql:8.0":                                 FlavorMySQL,
		"registry:5000/percona-server:8.0":          FlavorMySQL,
		"bitnami/mysql":                             FlavorMySQL,
		"mariadb.registry.local/postgres:16":        "",
		"busybox":                                   "",
	}
	for image, want := range cases {
		got, ok := FlavorFromImage(image)
		if got != want || ok != (want != "") {
			t.Errorf("FlavorFromImage(%q) = %q, %v; want %q", image, got, ok, want)
		}
	}
}

func TestServerStopsOnlyOnceReadOnly(t *testing.T) {
	out := mustMutate(t, userStatefulSet(), testConfig)
	db := container(t, out.Spec.Template.Spec.Containers, "mariadb")
	if db.Lifecycle == nil || db.Lifecycle.PreStop == nil || db.Lifecycle.PreStop.HTTPGet == nil ||
		db.Lifecycle.PreStop.HTTPGet.Path != PreStopPath || db.Lifecycle.PreStop.HTTPGet.Port.IntValue() != SidecarPort {
		t.Fatalf("server container preStop = %+v, want GET %s on port %d (a named port resolves among the server container's own)", db.Lifecycle, PreStopPath, SidecarPort)
	}

	// A user's own hook stays, and ours is not added beside it (a container has one).
	in := userStatefulSet()
	theirs := &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "sleep 5"}}}
	in.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: theirs}
	out = mustMutate(t, in, testConfig)
	db = container(t, out.Spec.Template.Spec.Containers, "mariadb")
	if !equality.Semantic.DeepEqual(db.Lifecycle.PreStop, theirs) {
		t.Fatalf("user's preStop replaced: %+v", db.Lifecycle.PreStop)
	}
	out.Labels[LabelInject] = "disabled"
	out = mustMutate(t, out, testConfig)
	if db := container(t, out.Spec.Template.Spec.Containers, "mariadb"); !equality.Semantic.DeepEqual(db.Lifecycle.PreStop, theirs) {
		t.Fatalf("opt-out removed the user's preStop: %+v", db.Lifecycle)
	}
}

// TestTheControllerRollsThePods: injection sets the OnDelete update strategy (the
// controller rolls replicas first, master last) and keeps the user's own, which
// opting out puts back; re-injecting changes nothing.
func TestTheControllerRollsThePods(t *testing.T) {
	in := userStatefulSet()
	in.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To(int32(1))}}
	out := mustMutate(t, in, testConfig)
	if out.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType || out.Spec.UpdateStrategy.RollingUpdate != nil {
		t.Fatalf("update strategy %+v, want OnDelete", out.Spec.UpdateStrategy)
	}
	if again := mustMutate(t, out, testConfig); !equality.Semantic.DeepEqual(again, out) {
		t.Errorf("re-injecting changed the StatefulSet: %v", again.Annotations)
	}
	out.Labels[LabelInject] = "disabled"
	back := mustMutate(t, out, testConfig)
	if !equality.Semantic.DeepEqual(back.Spec.UpdateStrategy, in.Spec.UpdateStrategy) || back.Annotations[AnnUserUpdateStrategy] != "" {
		t.Errorf("opting out gave update strategy %+v (annotation %q), want the user's %+v",
			back.Spec.UpdateStrategy, back.Annotations[AnnUserUpdateStrategy], in.Spec.UpdateStrategy)
	}
	broken := out.DeepCopy()
	broken.Annotations[AnnUserUpdateStrategy] = "rolling"
	if _, _, err := Mutate(broken, testConfig); err == nil || !strings.Contains(err.Error(), AnnUserUpdateStrategy) || !strings.Contains(err.Error(), `"rolling"`) {
		t.Errorf("a broken saved strategy: %v", err)
	}
}

// TestARestoreGetsTheBucketsCredentials: with init-uri, the clone step restores from
// the bucket with the backup Secret's keys in its environment; without, it gets none.
func TestARestoreGetsTheBucketsCredentials(t *testing.T) {
	sts := userStatefulSet()
	sts.Annotations = map[string]string{AnnInitURI: "s3://bucket/prod/default/db/latest", AnnBackupSecret: "bucket-creds"}
	out, _, err := Mutate(sts, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	clone := container(t, out.Spec.Template.Spec.InitContainers, ContainerClone)
	if len(clone.EnvFrom) != 1 || clone.EnvFrom[0].SecretRef == nil || clone.EnvFrom[0].SecretRef.Name != "bucket-creds" {
		t.Errorf("clone envFrom: %+v", clone.EnvFrom)
	}
	if !strings.Contains(strings.Join(clone.Command, " "), "--init-uri=s3://bucket/prod/default/db/latest") ||
		strings.Contains(strings.Join(clone.Command, " "), "--restore-to") {
		t.Errorf("clone command: %v", clone.Command)
	}
	sts.Annotations[AnnRestoreTo] = "0-100-2045"
	out, _, err = Mutate(sts, testConfig)
	if err != nil {
		t.Fatal(err)
	}
	if clone := container(t, out.Spec.Template.Spec.InitContainers, ContainerClone); !strings.Contains(strings.Join(clone.Command, " "), "--restore-to=0-100-2045") {
		t.Errorf("with restore-to, clone command: %v", clone.Command)
	}
	delete(sts.Annotations, AnnRestoreTo)
	for _, c := range append(out.Spec.Template.Spec.Containers, out.Spec.Template.Spec.InitContainers...) {
		if c.Name != ContainerClone && len(c.EnvFrom) > 0 && c.EnvFrom[0].SecretRef != nil && c.EnvFrom[0].SecretRef.Name == "bucket-creds" {
			t.Errorf("%s gets the bucket's credentials too", c.Name)
		}
	}
	delete(sts.Annotations, AnnInitURI)
	out, _, _ = Mutate(sts, testConfig)
	if clone := container(t, out.Spec.Template.Spec.InitContainers, ContainerClone); len(clone.EnvFrom) != 0 {
		t.Errorf("no restore, yet envFrom %+v", clone.EnvFrom)
	}
}

func TestMySQLTooOld(t *testing.T) {
	for image, want := range map[string]string{
		"mysql:5.7": "5.7", "mysql:5.7.44": "5.7.44", "mysql:8.0.22": "8.0.22", "percona/percona-server:8.0.22-13": "8.0.22",
		"mysql:8.0": "", "mysql:8.0.23": "", "mysql:8.4": "", "mysql:9.7.4": "", "mysql:8": "", "mysql": "", "mysql:latest": "",
		"localhost:5000/mysql": "", "localhost:5000/mysql:5.7": "5.7", "mysql@sha256:abc": "", "mysql:5.6@sha256:abc": "5.6",
	} {
		if got := mysqlTooOld(image); got != want {
			t.Errorf("mysqlTooOld(%q) = %q, want %q", image, got, want)
		}
	}
}
