package sidecar

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/replicant-dev/replicant/mysql"
)

// FragmentName is replicant's file in the server's conf.d. It sorts last among the
// usual names, so replication settings win over the image's and the user's files.
const FragmentName = "99-replicant.cnf"

// ServerConfig is what the my.cnf fragment of one pod is made from.
type ServerConfig struct {
	PodName        string // <sts>-<ordinal>
	Namespace      string
	Service        string // the StatefulSet's headless Service
	Flavor         string // mariadb or mysql
	ServerIDOffset int64
	Durability     string // semi-sync or async
	// ImageInitialises: the server image's entrypoint is about to initialise an empty
	// datadir on a temporary server that reads this fragment too; the flavor's
	// ImageInitOverrides apply (the clone's "start empty").
	ImageInitialises bool
}

// Ordinal is the StatefulSet ordinal at the end of a pod name ("db-2" -> 2).
func Ordinal(podName string) (int64, error) {
	i := strings.LastIndexByte(podName, '-')
	if i < 0 {
		return 0, fmt.Errorf("pod name %q has no -<ordinal> suffix: is it a StatefulSet pod?", podName)
	}
	n, err := strconv.ParseInt(podName[i+1:], 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("pod name %q does not end in -<ordinal>: is it a StatefulSet pod?", podName)
	}
	return n, nil
}

// ReportHost is the name a server reports to its replicas and the controller:
// <pod>.<headless service>.<namespace>, which resolves inside the cluster through the
// pods' DNS search path and is orchestrator's instance name.
func (c ServerConfig) ReportHost() string {
	return c.PodName + "." + c.Service + "." + c.Namespace
}

// Fragment renders the [mysqld] settings replicant needs: a unique server_id, binlog
// with replica updates in ROW format, strict GTIDs, read_only at start (only the
// controller opens writes), no replication before the controller says where from,
// stable binlog and relay log names (they must not follow the pod's hostname), and
// lossless semi-sync on the replica side (the master side is switched on by the
// controller on the server it elects, so a lone master never waits for acks).
func (c ServerConfig) Fragment() (string, error) {
	ordinal, err := Ordinal(c.PodName)
	if err != nil {
		return "", err
	}
	if c.ServerIDOffset < 1 {
		return "", fmt.Errorf("server-id offset %d: must be at least 1", c.ServerIDOffset)
	}
	serverID := c.ServerIDOffset + ordinal
	if serverID > 4294967295 {
		return "", fmt.Errorf("server_id %d (offset %d + ordinal %d) is above 4294967295", serverID, c.ServerIDOffset, ordinal)
	}
	flavor, err := mysql.FlavorNamed(c.Flavor)
	if err != nil {
		return "", err
	}
	if c.Durability != "semi-sync" && c.Durability != "async" {
		return "", fmt.Errorf("durability %q: allowed: semi-sync, async", c.Durability)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `replicant sidecar config` for pod %s at every start; do not edit.\n", c.PodName)
	b.WriteString("[mysqld]\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	set("server_id", strconv.FormatInt(serverID, 10))
	set("report_host", c.ReportHost())
	set("report_port", "3306")
	set("log_bin", "mysql-bin")
	set("log_bin_index", "mysql-bin.index")
	set("relay_log", "mysql-relay-bin")
	set("relay_log_index", "mysql-relay-bin.index")
	// Crash safety: a transaction acknowledged to a client is in the binlog on disk.
	set("sync_binlog", "1")
	set("innodb_flush_log_at_trx_commit", "1")
	set("relay_log_recovery", "ON")
	overrides := map[string]string{}
	if c.ImageInitialises {
		for _, o := range flavor.ImageInitOverrides() {
			overrides[o.Name] = o.Value
		}
	}
	for _, s := range flavor.ConfigSettings(c.Durability == "semi-sync") {
		if v, ok := overrides[s.Name]; ok {
			s.Value = v
		}
		set(s.Name, s.Value)
	}
	return b.String(), nil
}

// WriteConfig fills confDir, the directory the server includes: first the .cnf files
// the image ships in imageConfDir, then those of the user's own conf.d volume
// (userConfDir, may be empty), then replicant's fragment. Files are written to a
// temporary name and renamed, so the server never reads a half-written file.
func WriteConfig(c ServerConfig, confDir, imageConfDir, userConfDir string) ([]string, error) {
	fragment, err := c.Fragment()
	if err != nil {
		return nil, err
	}
	var written []string
	for _, src := range []string{imageConfDir, userConfDir} {
		if src == "" {
			continue
		}
		files, err := cnfFiles(src)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if filepath.Base(f) == FragmentName {
				continue // replicant's own name is reserved
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", f, err)
			}
			if err := writeFileAtomic(filepath.Join(confDir, filepath.Base(f)), data, 0o644); err != nil {
				return nil, err
			}
			written = append(written, filepath.Base(f))
		}
	}
	if err := writeFileAtomic(filepath.Join(confDir, FragmentName), []byte(fragment), 0o644); err != nil {
		return nil, err
	}
	return append(written, FragmentName), nil
}

// WriteFragment replaces replicant's fragment in confDir alone (the clone container
// lowers the fence for an image's initialisation this way).
func WriteFragment(c ServerConfig, confDir string) error {
	fragment, err := c.Fragment()
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(confDir, FragmentName), []byte(fragment), 0o644)
}

// cnfFiles lists the *.cnf regular files of dir (following symlinks, as a ConfigMap
// volume's files are), sorted; a missing dir has none.
func cnfFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") || !strings.HasSuffix(e.Name(), ".cnf") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		info, err := os.Stat(p)
		if err != nil || info.Mode()&fs.ModeType != 0 {
			continue
		}
		files = append(files, p)
	}
	sort.Strings(files)
	return files, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
