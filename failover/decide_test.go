package failover

import (
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

func gtids(t *testing.T, s string) mysql.GTIDSet {
	t.Helper()
	set, err := mysql.ParseGTIDSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// srv builds an observed server: "rw"/"ro", its binlog state, and the source it
// replicates from ("" for none).
func srv(t *testing.T, pod string, ordinal int64, mode, binlog, source string) Server {
	s := Server{Pod: pod, Ordinal: ordinal, Addr: pod + ":3306", SourceHost: pod + ".mysql.ns", Reachable: true, Lag: 0}
	s.State.ReadOnly = mode == "ro"
	s.State.BinlogState = gtids(t, binlog)
	if source != "" {
		s.State.Replica = &mysql.ReplicaStatus{SourceHost: source + ".mysql.ns", IORunning: "Yes", SQLRunning: true, UsingGTID: "Slave_Pos"}
	}
	return s
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestDecide(t *testing.T) {
	down := func(s Server) Server { s.Reachable, s.Err = false, "connection refused"; return s }
	lagging := func(s Server) Server { s.Lag = time.Minute; return s }
	cases := []struct {
		name       string
		master     string
		servers    []Server
		bootstrap  string
		fence      []string
		repoint    []string
		quarantine []string
		roles      map[string]string
		healthy    map[string]bool
	}{
		{
			name:      "new cluster: ordinal 0 becomes master",
			servers:   []Server{srv(t, "db-0", 0, "ro", "", ""), srv(t, "db-1", 1, "ro", "", ""), srv(t, "db-2", 2, "ro", "", "")},
			bootstrap: "db-0", repoint: []string{"db-1", "db-2"},
			roles:   map[string]string{"db-0": "master", "db-1": "replica", "db-2": "replica"},
			healthy: map[string]bool{"db-0": true, "db-1": false, "db-2": false},
		},
		{
			name:      "existing data: the most advanced becomes master",
			servers:   []Server{srv(t, "db-0", 0, "ro", "0-100-5", ""), srv(t, "db-1", 1, "ro", "0-100-9", ""), srv(t, "db-2", 2, "ro", "0-100-9", "")},
			bootstrap: "db-1", repoint: []string{"db-0", "db-2"},
			roles:   map[string]string{"db-0": "replica", "db-1": "master", "db-2": "replica"},
			healthy: map[string]bool{"db-0": false, "db-1": true, "db-2": false},
		},
		{
			name:      "only ordinal 0 up yet: bootstrap it, the others wait",
			servers:   []Server{srv(t, "db-0", 0, "ro", "", ""), down(srv(t, "db-1", 1, "ro", "", ""))},
			bootstrap: "db-0",
			roles:     map[string]string{"db-0": "master", "db-1": "replica"},
			healthy:   map[string]bool{"db-0": true, "db-1": false},
		},
		{
			name:    "nothing reachable: nothing happens",
			servers: []Server{down(srv(t, "db-0", 0, "ro", "", ""))},
			roles:   map[string]string{"db-0": "replica"},
			healthy: map[string]bool{"db-0": false},
		},
		{
			name:   "steady state",
			master: "db-0",
			servers: []Server{srv(t, "db-0", 0, "rw", "0-100-9", ""), srv(t, "db-1", 1, "ro", "0-100-9", "db-0"),
				lagging(srv(t, "db-2", 2, "ro", "0-100-8", "db-0"))},
			roles:   map[string]string{"db-0": "master", "db-1": "replica", "db-2": "replica"},
			healthy: map[string]bool{"db-0": true, "db-1": true, "db-2": false},
		},
		{
			name:    "a writable replica is fenced",
			master:  "db-0",
			servers: []Server{srv(t, "db-0", 0, "rw", "0-100-9", ""), srv(t, "db-1", 1, "rw", "0-100-9", "db-0")},
			fence:   []string{"db-1"},
			roles:   map[string]string{"db-0": "master", "db-1": "replica"},
			healthy: map[string]bool{"db-0": true, "db-1": true},
		},
		{
			name:       "errant transactions: quarantined, not repointed",
			master:     "db-1",
			servers:    []Server{srv(t, "db-0", 0, "ro", "0-100-10", ""), srv(t, "db-1", 1, "rw", "0-100-9,0-101-12", "")},
			quarantine: []string{"db-0"},
			roles:      map[string]string{"db-0": "replica", "db-1": "master"},
			healthy:    map[string]bool{"db-0": false, "db-1": true},
		},
		{
			name:    "an old master that is a subset rejoins",
			master:  "db-1",
			servers: []Server{srv(t, "db-0", 0, "ro", "0-100-9", ""), srv(t, "db-1", 1, "rw", "0-100-9,0-101-12", "")},
			repoint: []string{"db-0"},
			roles:   map[string]string{"db-0": "replica", "db-1": "master"},
			healthy: map[string]bool{"db-0": false, "db-1": true},
		},
		{
			name:    "master unreachable: replicas unhealthy, nothing repointed",
			master:  "db-0",
			servers: []Server{down(srv(t, "db-0", 0, "rw", "", "")), srv(t, "db-1", 1, "ro", "0-100-9", "db-0")},
			roles:   map[string]string{"db-0": "master", "db-1": "replica"},
			healthy: map[string]bool{"db-0": false, "db-1": false},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(Snapshot{Cluster: "db", Master: tc.master, Servers: tc.servers, MaxLag: 30 * time.Second})
			if p.Bootstrap != tc.bootstrap {
				t.Errorf("bootstrap %q, want %q", p.Bootstrap, tc.bootstrap)
			}
			if !reflect.DeepEqual(p.Fence, tc.fence) || !reflect.DeepEqual(p.Repoint, tc.repoint) {
				t.Errorf("fence %v repoint %v, want %v %v", p.Fence, p.Repoint, tc.fence, tc.repoint)
			}
			if got := keys(p.Quarantine); !reflect.DeepEqual(got, tc.quarantine) {
				t.Errorf("quarantine %v, want %v", got, tc.quarantine)
			}
			if !reflect.DeepEqual(p.Roles, tc.roles) || !reflect.DeepEqual(p.Healthy, tc.healthy) {
				t.Errorf("roles %v healthy %v\nwant  %v %v", p.Roles, p.Healthy, tc.roles, tc.healthy)
			}
			if len(p.Reasons) == 0 && (p.Bootstrap != "" || len(p.Repoint)+len(p.Fence)+len(p.Quarantine) > 0) {
				t.Errorf("a decision without a reason")
			}
		})
	}
}
