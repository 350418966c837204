package failover

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
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

// ensureServices keeps <sts>-master (role=master) and <sts>-replicas (role=replica,
// healthy=yes), ports 3306 and 8080, owned by the StatefulSet.
func ensureServices(ctx context.Context, c client.Client, sts *appsv1.StatefulSet) error {
	for _, svc := range []struct {
		name     string
		selector map[string]string
	}{
		{sts.Name + "-master", map[string]string{inject.LabelCluster: sts.Name, inject.LabelRole: RoleMaster}},
		{sts.Name + "-replicas", map[string]string{inject.LabelCluster: sts.Name, inject.LabelRole: RoleReplica, inject.LabelHealthy: "yes"}},
	} {
		obj := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc.name, Namespace: sts.Namespace}}
		_, err := controllerutil.CreateOrUpdate(ctx, c, obj, func() error {
			if obj.Labels == nil {
				obj.Labels = map[string]string{}
			}
			obj.Labels[inject.LabelCluster] = sts.Name
			obj.Spec.Selector = svc.selector
			obj.Spec.Ports = []corev1.ServicePort{
				{Name: "mysql", Port: 3306, TargetPort: intstr.FromInt32(3306), Protocol: corev1.ProtocolTCP},
				{Name: inject.SidecarPortName, Port: inject.SidecarPort, TargetPort: intstr.FromInt32(inject.SidecarPort), Protocol: corev1.ProtocolTCP},
			}
			// A server that is not Ready (its readiness probe) is still the master:
			// clients and clones must reach it.
			obj.Spec.PublishNotReadyAddresses = true
			return controllerutil.SetControllerReference(sts, obj, c.Scheme())
		})
		if err != nil {
			return fmt.Errorf("ensure Service %s: %w", svc.name, err)
		}
	}
	return nil
}
