package failover

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
)

// Keys of the credentials Secret besides the backup ones inject names.
const (
	SecretKeyAdminUser           = inject.SecretKeyAdminUser
	SecretKeyAdminPassword       = inject.SecretKeyAdminPassword
	SecretKeyReplicationUser     = "replication-user"
	SecretKeyReplicationPassword = "replication-password"
)

// Credentials are replicant's own accounts, from the credentials Secret.
type Credentials struct {
	Admin, Replication, Backup mysql.User
}

// Users lists the accounts to create on a master.
func (c Credentials) Users() []mysql.User { return []mysql.User{c.Admin, c.Replication, c.Backup} }

func randomPassword() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // the kernel's random source does not fail
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// ensureSecret creates the credentials Secret with random passwords when it is absent
// and never overwrites one that exists; it returns the credentials it holds.
func ensureSecret(ctx context.Context, c client.Client, sts *appsv1.StatefulSet, name string) (Credentials, error) {
	secret := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: sts.Namespace,
				Labels: map[string]string{inject.LabelCluster: sts.Name}},
			StringData: map[string]string{
				SecretKeyAdminUser: "replicant_admin", SecretKeyAdminPassword: randomPassword(),
				SecretKeyReplicationUser: "replicant_repl", SecretKeyReplicationPassword: randomPassword(),
				inject.SecretKeyBackupUser: "replicant_backup", inject.SecretKeyBackupPassword: randomPassword(),
			},
		}
		if err := controllerutil.SetOwnerReference(sts, secret, c.Scheme()); err != nil {
			return Credentials{}, err
		}
		if err := c.Create(ctx, secret); err != nil {
			return Credentials{}, fmt.Errorf("create credentials Secret %s: %w", name, err)
		}
		// StringData is write-only: read back what was stored.
		if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
			return Credentials{}, err
		}
	} else if err != nil {
		return Credentials{}, fmt.Errorf("read credentials Secret %s: %w", name, err)
	}
	get := func(key string) (string, error) {
		v := string(secret.Data[key])
		if v == "" {
			return "", fmt.Errorf("credentials Secret %s has no %q key", name, key)
		}
		return v, nil
	}
	var creds Credentials
	for _, f := range []struct {
		user                 *mysql.User
		userKey, passwordKey string
		role                 mysql.UserRole
	}{
		{&creds.Admin, SecretKeyAdminUser, SecretKeyAdminPassword, mysql.RoleAdmin},
		{&creds.Replication, SecretKeyReplicationUser, SecretKeyReplicationPassword, mysql.RoleReplication},
		{&creds.Backup, inject.SecretKeyBackupUser, inject.SecretKeyBackupPassword, mysql.RoleBackup},
	} {
		u, err := get(f.userKey)
		if err != nil {
			return Credentials{}, err
		}
		p, err := get(f.passwordKey)
		if err != nil {
			return Credentials{}, err
		}
		*f.user = mysql.User{Name: u, Password: p, Role: f.role}
	}
	return creds, nil
}

// rootPassword finds the root password the server container already gets
// (MARIADB_ROOT_PASSWORD or MYSQL_ROOT_PASSWORD, a literal or a secretKeyRef).
func rootPassword(ctx context.Context, c client.Client, sts *appsv1.StatefulSet, container string) (string, error) {
	for _, ctr := range sts.Spec.Template.Spec.Containers {
		if ctr.Name != container {
			continue
		}
		for _, e := range ctr.Env {
			if e.Name != "MARIADB_ROOT_PASSWORD" && e.Name != "MYSQL_ROOT_PASSWORD" {
				continue
			}
			if e.ValueFrom == nil {
				return e.Value, nil
			}
			if ref := e.ValueFrom.SecretKeyRef; ref != nil {
				secret := &corev1.Secret{}
				if err := c.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: ref.Name}, secret); err != nil {
					return "", fmt.Errorf("read the root password from Secret %s: %w", ref.Name, err)
				}
				return string(secret.Data[ref.Key]), nil
			}
		}
	}
	return "", fmt.Errorf("container %s has no MARIADB_ROOT_PASSWORD or MYSQL_ROOT_PASSWORD: replicant needs it once to create its own users", container)
}

// ensureOwnedObjects keeps <sts>-master (role=master) and <sts>-replicas (role=replica,
// healthy=yes), ports 3306 and 8080, and the PodDisruptionBudget <sts> (at most one
// database pod evicted at a time: a drain never takes the master and a replica
// together), all controlled by the StatefulSet. An object of one of those names the
// StatefulSet does not control (a user's own) is never taken over: it is left as it
// is and listed in conflicts.
func ensureOwnedObjects(ctx context.Context, c client.Client, uncached client.Reader, sts *appsv1.StatefulSet) (conflicts []string, err error) {
	var errs []error
	for _, svc := range []struct {
		name     string
		selector map[string]string
	}{
		{sts.Name + "-master", map[string]string{inject.LabelCluster: sts.Name, inject.LabelRole: RoleMaster}},
		{sts.Name + "-replicas", map[string]string{inject.LabelCluster: sts.Name, inject.LabelRole: RoleReplica, inject.LabelHealthy: "yes"}},
	} {
		obj := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc.name, Namespace: sts.Namespace}}
		conflict, err := keepControlled(ctx, c, uncached, sts, obj, func() {
			obj.Spec.Selector = svc.selector
			obj.Spec.Ports = []corev1.ServicePort{
				{Name: "mysql", Port: 3306, TargetPort: intstr.FromInt32(3306), Protocol: corev1.ProtocolTCP},
				{Name: inject.SidecarPortName, Port: inject.SidecarPort, TargetPort: intstr.FromInt32(inject.SidecarPort), Protocol: corev1.ProtocolTCP},
			}
			// A server that is not Ready (its readiness probe) is still the master:
			// clients and clones must reach it.
			obj.Spec.PublishNotReadyAddresses = true
		})
		if conflict {
			conflicts = append(conflicts, fmt.Sprintf("Service %s exists and StatefulSet %s does not control it: left as it is, so it does not follow the master (new pods clone from the master's pod directly); rename or delete it", svc.name, sts.Name))
		}
		errs = append(errs, err)
	}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: sts.Name, Namespace: sts.Namespace}}
	conflict, err := keepControlled(ctx, c, uncached, sts, pdb, func() {
		one := intstr.FromInt32(1)
		pdb.Spec.MaxUnavailable = &one
		pdb.Spec.MinAvailable = nil
		pdb.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{inject.LabelCluster: sts.Name}}
		// A pod that is not Ready already serves nobody: it never blocks a drain.
		always := policyv1.AlwaysAllow
		pdb.Spec.UnhealthyPodEvictionPolicy = &always
	})
	if conflict {
		conflicts = append(conflicts, fmt.Sprintf("PodDisruptionBudget %s exists and StatefulSet %s does not control it: left as it is; replicant's (one database pod evicted at a time) is not made", sts.Name, sts.Name))
	}
	return conflicts, errors.Join(append(errs, err)...)
}

// keepControlled creates or updates obj (its name and namespace set) as mutate makes
// it, with replicant's cluster label, controlled by sts. An object of that name sts
// does not control is left alone: conflict. The manager's cache holds only objects
// with replicant's label: one it cannot see there is looked up in the API (uncached)
// when creating it fails.
func keepControlled(ctx context.Context, c client.Client, uncached client.Reader, sts *appsv1.StatefulSet, obj client.Object, mutate func()) (conflict bool, err error) {
	kind := fmt.Sprintf("%T", obj)
	kind = kind[strings.LastIndex(kind, ".")+1:]
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err == nil && !metav1.IsControlledBy(obj, sts) {
		return true, nil
	} else if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("read %s %s: %w", kind, obj.GetName(), err)
	}
	_, err = controllerutil.CreateOrUpdate(ctx, c, obj, func() error {
		labels := obj.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[inject.LabelCluster] = sts.Name
		obj.SetLabels(labels)
		mutate()
		return controllerutil.SetControllerReference(sts, obj, c.Scheme())
	})
	if apierrors.IsAlreadyExists(err) {
		theirs := obj.DeepCopyObject().(client.Object)
		if uncached.Get(ctx, client.ObjectKeyFromObject(obj), theirs) == nil && !metav1.IsControlledBy(theirs, sts) {
			return true, nil
		}
	}
	if err != nil {
		return false, fmt.Errorf("ensure %s %s: %w", kind, obj.GetName(), err)
	}
	return false, nil
}
