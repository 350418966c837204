package failover

import (
	"reflect"
	"slices"
	"sort"
	"strings"
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
	s := Server{Pod: pod, Ordinal: ordinal, Addr: pod + ":3306", SourceHost: pod + ".mysql.ns", Reachable: true, Lag: 0, CloneKnown: true}
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
			name: "only ordinal 0 up yet: bootstrap it, the others wait",
			servers: []Server{srv(t, "db-0", 0, "ro", "", ""), func() Server {
				s := down(srv(t, "db-1", 1, "ro", "", ""))
				s.Initializing = true // waiting in replicant-clone for a source
				return s
			}()},
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

func TestDecideFailover(t *testing.T) {
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	downMaster := func() Server {
		s := srv(t, "db-0", 0, "rw", "", "")
		s.Reachable, s.Err = false, "connection refused"
		return s
	}
	replica := func(pod string, ordinal int64, io, received string) Server {
		s := srv(t, pod, ordinal, "ro", "0-100-10", "db-0")
		s.State.CurrentPos = gtids(t, "0-100-10")
		s.State.Replica.IORunning = io
		s.State.Replica.ReceivedPos = gtids(t, received)
		return s
	}
	base := func(servers ...Server) Snapshot {
		return Snapshot{Cluster: "db", Master: "db-0", Servers: servers, MaxLag: 30 * time.Second, AutoFailover: true,
			MasterFailures: 3, FailureThreshold: 3, AntiFlap: 5 * time.Minute, Now: now}
	}
	cases := []struct {
		name    string
		snap    Snapshot
		promote string
		held    string
	}{
		{"replicas agree: the one that received most is promoted",
			base(downMaster(), replica("db-1", 1, "Connecting", "0-100-11"), replica("db-2", 2, "Connecting", "0-100-12")), "db-2", ""},
		{"equal: the lowest ordinal",
			base(downMaster(), replica("db-1", 1, "No", "0-100-12"), replica("db-2", 2, "Connecting", "0-100-12")), "db-1", ""},
		{"too few failed probes", func() Snapshot {
			s := base(downMaster(), replica("db-1", 1, "Connecting", "0-100-11"))
			s.MasterFailures = 2
			return s
		}(), "", ""},
		{"only the controller lost the master",
			base(downMaster(), replica("db-1", 1, "Yes", "0-100-11"), replica("db-2", 2, "Connecting", "0-100-11")), "", "replicas still receive"},
		{"the master pod is gone: no need for the replicas' word", func() Snapshot {
			m := downMaster()
			m.Addr = ""
			return base(m, replica("db-1", 1, "Yes", "0-100-11"))
		}(), "db-1", ""},
		{"manual failover", func() Snapshot {
			s := base(downMaster(), replica("db-1", 1, "Connecting", "0-100-11"))
			s.AutoFailover = false
			return s
		}(), "", "failover is manual"},
		{"inside the anti-flapping window", func() Snapshot {
			s := base(downMaster(), replica("db-1", 1, "Connecting", "0-100-11"))
			s.LastFailover = now.Add(-time.Minute)
			return s
		}(), "", "anti-flapping"},
		{"after the window", func() Snapshot {
			s := base(downMaster(), replica("db-1", 1, "Connecting", "0-100-11"))
			s.LastFailover = now.Add(-10 * time.Minute)
			return s
		}(), "db-1", ""},
		{"every IO thread stopped, nobody promoting: nothing confirms it",
			base(downMaster(), replica("db-1", 1, "No", "0-100-11"), replica("db-2", 2, "No", "0-100-11")), "", "nothing confirms it is down"},
		{"a promotion that failed stopped the last witness: it still counts", func() Snapshot {
			s := base(downMaster(), replica("db-1", 1, "No", "0-100-11"), replica("db-2", 2, "No", "0-100-12"))
			s.Promoting = "db-1"
			return s
		}(), "db-2", ""},
		{"no replica reachable", func() Snapshot {
			r := replica("db-1", 1, "Connecting", "0-100-11")
			r.Reachable = false
			return base(downMaster(), r)
		}(), "", "nothing confirms it is down"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.snap)
			if p.Promote != tc.promote {
				t.Errorf("promote %q, want %q (%v)", p.Promote, tc.promote, p.Reasons)
			}
			if tc.held == "" && p.Held != "" || tc.held != "" && !strings.Contains(p.Held, tc.held) {
				t.Errorf("held %q, want %q", p.Held, tc.held)
			}
		})
	}
}

func TestTerminatingMasterIsHandedOver(t *testing.T) {
	terminating := func(s Server) Server { s.Terminating = true; return s }
	steady := func() []Server {
		return []Server{srv(t, "db-0", 0, "ro", "0-100-9", "db-4"), srv(t, "db-1", 1, "ro", "0-100-9", "db-4"),
			srv(t, "db-2", 2, "ro", "0-100-9", "db-4"), srv(t, "db-3", 3, "ro", "0-100-9", "db-4"), srv(t, "db-4", 4, "rw", "0-100-9", "")}
	}
	cases := []struct {
		name     string
		replicas int64
		edit     func([]Server) []Server
		handoff  string
		unhealth []string
	}{
		{name: "steady: nothing", replicas: 5, edit: func(s []Server) []Server { return s }},
		{name: "pod deleted: the most advanced healthy replica, lowest ordinal on a tie", replicas: 5,
			edit: func(s []Server) []Server { s[4] = terminating(s[4]); return s }, handoff: "db-0"},
		{name: "scale-down 5 -> 2: a pod the StatefulSet keeps, even if another is ahead", replicas: 2,
			edit: func(s []Server) []Server {
				s[4] = terminating(s[4])
				s[3].State.Replica.ReceivedPos = gtids(t, "0-100-10")
				return s
			}, handoff: "db-0"},
		{name: "a terminating replica is unhealthy and never chosen", replicas: 5,
			edit:    func(s []Server) []Server { s[4], s[0] = terminating(s[4]), terminating(s[0]); return s },
			handoff: "db-1", unhealth: []string{"db-0"}},
		{name: "no healthy replica: it stops as master (failover then decides)", replicas: 5,
			edit: func(s []Server) []Server {
				s[4] = terminating(s[4])
				for i := 0; i < 4; i++ {
					s[i].Lag = time.Hour
				}
				return s
			}, unhealth: []string{"db-0", "db-1", "db-2", "db-3"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Decide(Snapshot{Cluster: "db", Master: "db-4", Servers: c.edit(steady()), MaxLag: time.Minute, Replicas: c.replicas})
			if p.Handoff != c.handoff {
				t.Errorf("handoff = %q, want %q (%v)", p.Handoff, c.handoff, p.Reasons)
			}
			for _, pod := range c.unhealth {
				if p.Healthy[pod] {
					t.Errorf("%s healthy", pod)
				}
			}
			if p.Promote != "" || len(p.Fence) > 0 {
				t.Errorf("a hand-over is not a failover: promote %q fence %v", p.Promote, p.Fence)
			}
		})
	}

	s := Snapshot{Cluster: "db", Master: "db-4", Servers: steady(), MaxLag: time.Minute, Replicas: 5}
	s.Servers[1] = terminating(s.Servers[1])
	if err := ValidateTakeover(s, Decide(s), "db-1"); err == nil || !strings.Contains(err.Error(), "terminating") {
		t.Errorf("takeover to a terminating pod: %v", err)
	}
}

func TestRestartedReplicaIsStarted(t *testing.T) {
	stopped := func(s Server, io string, sql bool, ioErr int) Server {
		r := *s.State.Replica
		r.IORunning, r.SQLRunning, r.LastIOErrno = io, sql, ioErr
		s.State.Replica = &r
		return s
	}
	for _, c := range []struct {
		name  string
		db1   func(Server) Server
		start bool
	}{
		{"restarted (skip_slave_start): both threads stopped, no error", func(s Server) Server { return stopped(s, "No", false, 0) }, true},
		{"an IO thread stopped by hand stays stopped", func(s Server) Server { return stopped(s, "No", true, 0) }, false},
		{"an IO error is not papered over", func(s Server) Server { return stopped(s, "No", false, 2003) }, false},
		{"replicating", func(s Server) Server { return s }, false},
		{"its IO thread stopped by a promotion that did not end", func(s Server) Server { return stopped(s, "No", true, 0) }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			promoting := ""
			if strings.Contains(c.name, "promotion") {
				promoting = "db-1"
			}
			p := Decide(Snapshot{Cluster: "db", Master: "db-0", MaxLag: time.Minute, Promoting: promoting,
				Servers: []Server{srv(t, "db-0", 0, "rw", "0-100-9", ""), c.db1(srv(t, "db-1", 1, "ro", "0-100-9", "db-0"))}})
			if got := len(p.Start) == 1 && p.Start[0] == "db-1"; got != c.start {
				t.Errorf("start = %v, want db-1 started: %v (%v)", p.Start, c.start, p.Reasons)
			}
			if p.Healthy["db-1"] != (c.name == "replicating") {
				t.Errorf("healthy = %v", p.Healthy["db-1"])
			}
		})
	}
}

// An old master back after a failover still has its semi-sync master side on: its
// replication thread's commits would wait for ever. Switched off, like any replica's.
func TestReplicaWithSemiSyncMasterOnIsSwitchedOff(t *testing.T) {
	old := srv(t, "db-1", 1, "ro", "0-100-9", "db-0")
	old.State.SemiSync.MasterEnabled = true
	p := Decide(Snapshot{Cluster: "db", Master: "db-0", MaxLag: time.Minute,
		Servers: []Server{srv(t, "db-0", 0, "rw", "0-100-9", ""), old}})
	if len(p.SemiSyncOff) != 1 || p.SemiSyncOff[0] != "db-1" {
		t.Errorf("SemiSyncOff = %v, want [db-1] (%v)", p.SemiSyncOff, p.Reasons)
	}
}

// Found end to end: a master promoted from a cloned replica lacks, in its binlog
// state, the server ids of masters before the clone; replicas that logged those
// masters' transactions are not errant.
func TestReplicasOfAnOlderMasterAreNotErrantAgainstAClonedMaster(t *testing.T) {
	master := srv(t, "db-4", 4, "rw", "0-100-2400,0-104-2500", "")
	master.State.ReplicaPos = gtids(t, "0-100-2400")
	p := Decide(Snapshot{Cluster: "db", Master: "db-4", MaxLag: time.Minute, Servers: []Server{
		srv(t, "db-0", 0, "ro", "0-101-2025,0-100-2400,0-104-2500", "db-4"), master}})
	if len(p.Quarantine) != 0 || !p.Healthy["db-0"] {
		t.Fatalf("quarantine %v, healthy %v: %v", p.Quarantine, p.Healthy, p.Reasons)
	}
	// Without what the master applied, the same replica looks errant: the case is real.
	master.State.ReplicaPos = mysql.GTIDSet{}
	if p := Decide(Snapshot{Cluster: "db", Master: "db-4", MaxLag: time.Minute, Servers: []Server{
		srv(t, "db-0", 0, "ro", "0-101-2025,0-100-2400,0-104-2500", "db-4"), master}}); len(p.Quarantine) != 1 {
		t.Fatalf("quarantine %v", p.Quarantine)
	}
}

// TestFailoverPromotesOnlyAProvenCandidate: the cases of issue #10 where the old rules
// promoted a server that could not hold every acknowledged write, or one that was
// quarantined, and the holds that replace them.
func TestFailoverPromotesOnlyAProvenCandidate(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	downMaster := func(pod string, ordinal int64) Server {
		s := srv(t, pod, ordinal, "rw", "", "")
		s.Reachable, s.Err = false, "connection refused"
		return s
	}
	replica := func(pod string, ordinal int64, master, io, binlog, received string) Server {
		s := srv(t, pod, ordinal, "ro", binlog, master)
		s.State.CurrentPos = gtids(t, binlog).Position()
		s.State.Replica.IORunning = io
		s.State.Replica.ReceivedPos = gtids(t, received)
		return s
	}
	semiSync := func(servers ...Server) Snapshot {
		return Snapshot{Cluster: "db", Master: "db-1", Servers: servers, MaxLag: 30 * time.Second, AutoFailover: true,
			MasterFailures: 3, FailureThreshold: 3, AntiFlap: 5 * time.Minute, Now: now, Replicas: 3,
			SemiSync: true, Durable: true, SemiSyncFrom: gtids(t, "0-101-40"), MasterSource: "db-1.mysql.ns",
			WritesSafeAt: now.Add(-time.Second)}
	}
	cases := []struct {
		name    string
		snap    Snapshot
		promote string
		held    string // a part of Plan.Held, or of Plan.Wait for a wait
	}{
		{"a quarantined server is never elected, however far ahead", func() Snapshot {
			// db-0's own errant transactions (server_id 100) are ahead; what it
			// received from db-1 is not.
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-100-60,0-101-50", "0-101-50"), downMaster("db-1", 1),
				replica("db-2", 2, "db-1", "Connecting", "0-100-50,0-101-55", "0-101-55"))
			s.Quarantined = map[string]string{"db-0": "0-100-60"}
			return s
		}(), "db-2", ""},
		{"the only replica quarantined: hold", func() Snapshot {
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-100-60", "0-100-60"), downMaster("db-1", 1))
			s.Quarantined = map[string]string{"db-0": "0-100-60"}
			return s
		}(), "", "no replica that followed it can take over"},
		{"a quarantined replica that received acknowledged writes the others lack: hold", func() Snapshot {
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-100-60,0-101-58", "0-101-58"), downMaster("db-1", 1),
				replica("db-2", 2, "db-1", "Connecting", "0-101-55", "0-101-55"))
			s.Quarantined = map[string]string{"db-0": "0-100-60"}
			return s
		}(), "", "lacks 0-101-58, which db-0 received"},
		{"a divergent history with the same sequence numbers is not as far: neither holds all", semiSync(
			replica("db-0", 0, "db-1", "No", "0-101-44,0-100-45", "0-100-45"), downMaster("db-1", 1),
			replica("db-2", 2, "db-1", "Connecting", "0-101-45", "0-101-45")), "", "received everything the others did"},
		{"a replica stopped long ago on an error proves nothing", func() Snapshot {
			r := replica("db-0", 0, "db-1", "No", "0-101-41", "0-101-41")
			r.State.Replica.LastIOErrno = 1236
			return semiSync(r, downMaster("db-1", 1))
		}(), "", "nothing confirms it is down"},
		{"with semi-sync, a replica that does not answer may hold acknowledged writes", func() Snapshot {
			silent := replica("db-2", 2, "db-1", "Connecting", "0-101-50", "0-101-50")
			silent.Reachable = false
			return semiSync(replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1), silent)
		}(), "", "do not answer"},
		{"a pod still initializing acknowledged nothing", func() Snapshot {
			init := srv(t, "db-2", 2, "ro", "", "")
			init.Reachable, init.Initializing = false, true
			return semiSync(replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1), init)
		}(), "db-0", ""},
		{"commits were not waiting for a replica: hold", func() Snapshot {
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1))
			s.Durable = false
			return s
		}(), "", "semi-sync was off"},
		{"the candidate did not receive the position from which commits waited", semiSync(
			replica("db-0", 0, "db-1", "Connecting", "0-101-30", "0-101-30"), downMaster("db-1", 1)), "", "did not receive 0-101-40"},
		{"a replica of another source is no candidate", func() Snapshot {
			return semiSync(replica("db-0", 0, "elsewhere", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1),
				replica("db-2", 2, "db-1", "Connecting", "0-101-44", "0-101-44"))
		}(), "", "received everything the others did"},
		{"a replica with an SQL error cannot apply its relay log", func() Snapshot {
			r := replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-48")
			r.State.Replica.LastSQLErrno = 1062
			return semiSync(r, downMaster("db-1", 1), replica("db-2", 2, "db-1", "Connecting", "0-101-44", "0-101-46"))
		}(), "", "received everything the others did"},
		{"the old master's write lease still runs: wait", func() Snapshot {
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1))
			s.WritesSafeAt = now.Add(1500 * time.Millisecond)
			return s
		}(), "", "write lease has run out, in 1.5s"},
		{"async durability: the most advanced, no proof asked", func() Snapshot {
			silent := replica("db-2", 2, "db-1", "Connecting", "0-101-50", "0-101-50")
			silent.Reachable = false
			s := semiSync(replica("db-0", 0, "db-1", "Connecting", "0-101-45", "0-101-45"), downMaster("db-1", 1), silent)
			s.SemiSync, s.Durable = false, false
			return s
		}(), "db-0", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.snap)
			if p.Promote != tc.promote {
				t.Errorf("promote %q, want %q (held %q, wait %q)", p.Promote, tc.promote, p.Held, p.Wait)
			}
			if got := p.Held + p.Wait; tc.held != "" && !strings.Contains(got, tc.held) {
				t.Errorf("held %q, wait %q; want %q", p.Held, p.Wait, tc.held)
			}
			if p.Roles["db-0"] == RoleMaster && tc.snap.Quarantined["db-0"] != "" {
				t.Errorf("quarantined db-0 made master")
			}
		})
	}
}

// TestFirstMasterIsReconstructedNotGuessed: without the controller's state (a new
// cluster, or the state lost) the master is the only writable server, or the one the
// replicas follow; a bootstrap waits for every started server and refuses diverged data.
func TestFirstMasterIsReconstructedNotGuessed(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	snap := func(servers ...Server) Snapshot {
		return Snapshot{Cluster: "db", Servers: servers, MaxLag: 30 * time.Second, Replicas: 3, Now: now, WritesSafeAt: now}
	}
	silent := func(s Server) Server { s.Reachable, s.Err = false, "i/o timeout"; return s }
	cases := []struct {
		name             string
		snap             Snapshot
		adopt, bootstrap string
		fence            []string
		held             string
	}{
		{"the only writable server", snap(srv(t, "db-0", 0, "ro", "0-100-5", "db-1"), srv(t, "db-1", 1, "rw", "0-100-9,0-101-3", ""),
			srv(t, "db-2", 2, "ro", "0-100-9", "db-1")), "db-1", "", nil, ""},
		{"the one every replica follows (fenced, e.g. by its lease)", snap(srv(t, "db-0", 0, "ro", "0-100-5", "db-1"),
			srv(t, "db-1", 1, "ro", "0-100-9", ""), srv(t, "db-2", 2, "ro", "0-100-9", "db-1")), "db-1", "", nil, ""},
		{"replicas follow a server that does not answer", snap(srv(t, "db-0", 0, "ro", "0-100-5", "db-1"),
			silent(srv(t, "db-1", 1, "ro", "0-100-9", "")), srv(t, "db-2", 2, "ro", "", "")), "", "", nil, "not one server that answers"},
		{"an empty pod 0 is not bootstrapped beside a pod with data", snap(srv(t, "db-0", 0, "ro", "", ""),
			srv(t, "db-1", 1, "ro", "0-100-9", "")), "", "db-1", nil, ""},
		{"a started server that does not answer holds the bootstrap", snap(srv(t, "db-0", 0, "ro", "", ""),
			silent(srv(t, "db-1", 1, "ro", "", ""))), "", "", nil, "waiting for [db-1]"}, // a Wait, not a Held: no Event
		{"diverged data", snap(srv(t, "db-0", 0, "ro", "0-100-9", ""), srv(t, "db-1", 1, "ro", "0-100-7,0-101-8", "")),
			"", "", nil, "diverge"},
		{"two writable servers: both fenced", snap(srv(t, "db-0", 0, "rw", "0-100-9", ""), srv(t, "db-1", 1, "rw", "0-100-9", "")),
			"", "", []string{"db-0", "db-1"}, "writable servers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.snap)
			if p.Adopt != tc.adopt || p.Bootstrap != tc.bootstrap {
				t.Errorf("adopt %q bootstrap %q, want %q %q (held %q)", p.Adopt, p.Bootstrap, tc.adopt, tc.bootstrap, p.Held)
			}
			if !reflect.DeepEqual(p.Fence, tc.fence) {
				t.Errorf("fence %v, want %v", p.Fence, tc.fence)
			}
			if tc.held != "" && !strings.Contains(p.Held+p.Wait, tc.held) {
				t.Errorf("held %q wait %q, want %q", p.Held, p.Wait, tc.held)
			}
		})
	}
}

// TestRequestsAreDecidedInThePlan: which request wins, and why one is refused, is
// Decide's answer, not the act phase's control flow.
func TestRequestsAreDecidedInThePlan(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	req := func(v string) *string { return &v }
	base := func(servers ...Server) Snapshot {
		return Snapshot{Cluster: "db", Master: "db-0", Servers: servers, MaxLag: 30 * time.Second, AutoFailover: true, Replicas: 3,
			FailureThreshold: 3, AntiFlap: 5 * time.Minute, Now: now, WritesSafeAt: now.Add(-time.Second)}
	}
	healthy := func() Snapshot {
		return base(srv(t, "db-0", 0, "rw", "0-100-9", ""), srv(t, "db-1", 1, "ro", "0-100-9", "db-0"), srv(t, "db-2", 2, "ro", "0-100-9", "db-0"))
	}
	t.Run("failover-to any picks the most advanced and replaces automatic decisions", func(t *testing.T) {
		s := healthy()
		s.FailoverTo, s.TakeoverTo = req("any"), req("db-2")
		p := Decide(s)
		if p.Forced == nil || p.Forced.Target != "db-1" || p.Forced.WaitLease || p.Takeover != "" {
			t.Errorf("forced %+v takeover %q", p.Forced, p.Takeover)
		}
	})
	t.Run("failover-to a quarantined pod is refused", func(t *testing.T) {
		s := healthy()
		s.Servers[2].State.BinlogState = gtids(t, "0-100-9,0-102-1")
		s.Quarantined = map[string]string{"db-2": "0-102-1"}
		s.FailoverTo = req("db-2")
		p := Decide(s)
		if p.Forced != nil || !strings.Contains(p.Refused[RequestFailoverTo], "errant") {
			t.Errorf("forced %+v refused %v", p.Forced, p.Refused)
		}
	})
	t.Run("failover-to with the master unreachable waits for its lease", func(t *testing.T) {
		s := healthy()
		s.Servers[0].Reachable = false
		s.WritesSafeAt = now.Add(time.Second)
		s.FailoverTo = req("db-2")
		p := Decide(s)
		if p.Forced == nil || !p.Forced.WaitLease || p.Promote != "" {
			t.Errorf("forced %+v promote %q", p.Forced, p.Promote)
		}
	})
	t.Run("a hand-over wins over takeover-to", func(t *testing.T) {
		s := healthy()
		s.Servers[0].Terminating = true
		s.TakeoverTo = req("db-2")
		p := Decide(s)
		if p.Handoff != "db-1" || p.Takeover != "" {
			t.Errorf("handoff %q takeover %q", p.Handoff, p.Takeover)
		}
	})
	t.Run("takeover-to an unhealthy replica is refused", func(t *testing.T) {
		s := healthy()
		s.Servers[2].Lag = time.Hour
		s.TakeoverTo = req("db-2")
		p := Decide(s)
		if p.Takeover != "" || !strings.Contains(p.Refused[RequestTakeoverTo], "not a healthy replica") {
			t.Errorf("takeover %q refused %v", p.Takeover, p.Refused)
		}
	})
	t.Run("reset-replica on the master is refused; on a replica it replaces its repoint", func(t *testing.T) {
		s := healthy()
		s.Servers[0].ResetRequested = true
		s.Servers[2].ResetRequested = true
		s.Servers[2].State.Replica.SourceHost = "elsewhere"
		p := Decide(s)
		if !reflect.DeepEqual(p.Reset, []string{"db-2"}) || slices.Contains(p.Repoint, "db-2") ||
			!strings.Contains(p.Refused[RequestResetReplica+"/db-0"], "is the master") {
			t.Errorf("reset %v repoint %v refused %v", p.Reset, p.Repoint, p.Refused)
		}
	})
}

// TestAFreshCloneWaitsForItsPosition: a cloned server has an empty binlog and no
// replica settings; until its sidecar says where the clone ended it is not started
// (from anywhere else it would re-apply what its data holds).
func TestAFreshCloneWaitsForItsPosition(t *testing.T) {
	master := srv(t, "db-0", 0, "rw", "0-100-136", "")
	clone := srv(t, "db-1", 1, "ro", "", "")
	clone.CloneKnown = false
	s := Snapshot{Cluster: "db", Master: "db-0", Servers: []Server{master, clone}, MaxLag: 30 * time.Second, Replicas: 2}
	if p := Decide(s); slices.Contains(p.Repoint, "db-1") || p.Healthy["db-1"] {
		t.Errorf("repointed %v, healthy %v before its clone position is known", p.Repoint, p.Healthy)
	}
	s.Servers[1].CloneKnown, s.Servers[1].CloneGTID = true, "0-100-136"
	if p := Decide(s); !slices.Contains(p.Repoint, "db-1") {
		t.Errorf("not repointed once its clone position is known: %v", p.Reasons)
	}
}
