package sidecar

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestOrdinal(t *testing.T) {
	for name, want := range map[string]int64{"db-0": 0, "my-db-12": 12, "x-99": 99} {
		if got, err := Ordinal(name); err != nil || got != want {
			t.Errorf("Ordinal(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"db", "db-", "db-x", "db-1x"} {
		if _, err := Ordinal(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("Ordinal(%q) error = %v", bad, err)
		}
	}
}

func TestFragment(t *testing.T) {
	c := ServerConfig{PodName: "db-2", Namespace: "prod", Service: "mysql", Flavor: "mariadb", ServerIDOffset: 100, Durability: "semi-sync"}
	got, err := c.Fragment()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"[mysqld]", "server_id = 102", "report_host = db-2.mysql.prod", "log_bin = mysql-bin",
		"relay_log = mysql-relay-bin", "log_slave_updates = ON", "binlog_format = ROW", "gtid_strict_mode = ON",
		"read_only = ON", "skip_slave_start = ON", "sync_binlog = 1", "slave_net_timeout = 4", "rpl_semi_sync_slave_enabled = ON", "rpl_semi_sync_slave_kill_conn_timeout = 1",
		"rpl_semi_sync_master_enabled = OFF", "rpl_semi_sync_master_wait_point = AFTER_SYNC",
		"rpl_semi_sync_master_timeout = 4294967295", "rpl_semi_sync_master_wait_no_slave = ON"} {
		if !strings.Contains(got, "\n"+line+"\n") {
			t.Errorf("fragment lacks %q:\n%s", line, got)
		}
	}
	c.Durability = "async"
	if got, _ := c.Fragment(); !strings.Contains(got, "rpl_semi_sync_slave_enabled = OFF") {
		t.Errorf("async fragment enables semi-sync:\n%s", got)
	}
	c.Flavor, c.Durability = "mysql", "semi-sync"
	got, err = c.Fragment()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"server_id = 102", "log_bin = mysql-bin", "log_replica_updates = ON", "gtid_mode = ON",
		"enforce_gtid_consistency = ON", "read_only = ON", "super_read_only = ON", "skip_replica_start = ON", "sync_binlog = 1",
		"replica_net_timeout = 4", "plugin_load_add = mysql_clone.so", "plugin_load_add = semisync_source.so",
		"plugin_load_add = semisync_replica.so", "loose_rpl_semi_sync_replica_enabled = ON", "loose_rpl_semi_sync_source_enabled = OFF",
		"loose_rpl_semi_sync_source_wait_point = AFTER_SYNC", "loose_rpl_semi_sync_source_timeout = 4294967295",
		"loose_rpl_semi_sync_source_wait_no_replica = ON"} {
		if !strings.Contains(got, "\n"+line+"\n") {
			t.Errorf("MySQL fragment lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(got, "slave") || strings.Contains(got, "gtid_strict_mode") {
		t.Errorf("MySQL fragment has MariaDB settings:\n%s", got)
	}
	for name, bad := range map[string]ServerConfig{
		"flavor":     {PodName: "db-0", Flavor: "percona", ServerIDOffset: 1, Durability: "async"},
		"durability": {PodName: "db-0", Flavor: "mariadb", ServerIDOffset: 1, Durability: "sync"},
		"offset":     {PodName: "db-0", Flavor: "mariadb", ServerIDOffset: 0, Durability: "async"},
		"overflow":   {PodName: "db-5", Flavor: "mariadb", ServerIDOffset: 4294967292, Durability: "async"},
		"pod name":   {PodName: "db", Flavor: "mariadb", ServerIDOffset: 1, Durability: "async"},
	} {
		if _, err := bad.Fragment(); err == nil {
			t.Errorf("%s: accepted %+v", name, bad)
		}
	}
}

// TestFragmentForImageInitialisation: while an image's entrypoint initialises an empty
// datadir, MySQL's fragment keeps read_only (applications are refused) but not
// super_read_only (the entrypoint creates its users as root); MariaDB's is unchanged.
// WriteFragment replaces the fragment alone.
func TestFragmentForImageInitialisation(t *testing.T) {
	c := ServerConfig{PodName: "db-0", Namespace: "prod", Service: "mysql", Flavor: "mysql", ServerIDOffset: 100, Durability: "semi-sync"}
	dir := t.TempDir()
	other := filepath.Join(dir, "50-user.cnf")
	if err := os.WriteFile(other, []byte("[mysqld]\nmax_connections = 7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.ImageInitialises = true
	if err := WriteFragment(c, dir); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, FragmentName))
	if err != nil {
		t.Fatal(err)
	}
	got := string(data)
	for _, line := range []string{"read_only = ON", "super_read_only = OFF", "gtid_mode = ON"} {
		if !strings.Contains(got, "\n"+line+"\n") {
			t.Errorf("initialisation fragment lacks %q:\n%s", line, got)
		}
	}
	if strings.Contains(got, "super_read_only = ON") {
		t.Errorf("initialisation fragment fences root:\n%s", got)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("WriteFragment touched another file: %v", err)
	}
	c.Flavor = "mariadb"
	withInit, _ := c.Fragment()
	c.ImageInitialises = false
	without, _ := c.Fragment()
	if withInit != without {
		t.Errorf("MariaDB's fragment changed for an image's initialisation:\n%s\nvs\n%s", withInit, without)
	}
}

func TestWriteConfigCopiesImageThenUserThenFragment(t *testing.T) {
	image, user, out := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(dir, name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(image, "docker.cnf", "[mysqld]\nskip-host-cache\n")
	write(image, "README", "not a cnf")
	write(user, "tuning.cnf", "[mysqld]\nmax_connections = 500\n")
	write(user, FragmentName, "[mysqld]\nread_only = OFF\n") // cannot replace replicant's
	// A ConfigMap volume: the file is a symlink into a hidden ..data directory.
	if err := os.Mkdir(filepath.Join(user, "..data"), 0o755); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(user, "..data"), "linked.cnf", "[mysqld]\nwait_timeout = 60\n")
	if err := os.Symlink("..data/linked.cnf", filepath.Join(user, "linked.cnf")); err != nil {
		t.Fatal(err)
	}
	c := ServerConfig{PodName: "db-0", Namespace: "ns", Service: "mysql", Flavor: "mariadb", ServerIDOffset: 100, Durability: "semi-sync"}
	files, err := WriteConfig(c, out, image, user)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"docker.cnf", "linked.cnf", "tuning.cnf", FragmentName}; !reflect.DeepEqual(files, want) {
		t.Errorf("written %v, want %v", files, want)
	}
	data, _ := os.ReadFile(filepath.Join(out, FragmentName))
	if !strings.Contains(string(data), "read_only = ON") {
		t.Errorf("the user's file replaced replicant's fragment:\n%s", data)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 4 {
		t.Errorf("%d files in conf.d, want 4 (no temporary files)", len(entries))
	}
	if _, err := WriteConfig(c, filepath.Join(out, "missing"), image, ""); err == nil {
		t.Error("wrote into a directory that does not exist")
	}
}
