package failover

import (
	"strings"
	"testing"
	"time"
)

// TestRollout: a rolling update deletes one pod at a time, replicas first, each only
// once every other server is healthy; the master is handed over to an updated
// replica, then rolled as a replica; a rolled pod that does not come back healthy
// stops it.
func TestRollout(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	at := func(s Server, revision string) Server {
		s.Revision, s.Ready, s.Created = revision, true, now.Add(-time.Hour)
		return s
	}
	cluster := func(r0, r1, r2 string) []Server {
		return []Server{
			at(srv(t, "db-0", 0, "rw", "0-100-50", ""), r0),
			at(srv(t, "db-1", 1, "ro", "0-100-50", "db-0"), r1),
			at(srv(t, "db-2", 2, "ro", "0-100-50", "db-0"), r2),
		}
	}
	snap := func(servers []Server) Snapshot {
		return Snapshot{Cluster: "db", Master: "db-0", Servers: servers, MaxLag: 30 * time.Second, Replicas: int64(len(servers)),
			SemiSync: true, Durable: true, UpdateRevision: "new", RolloutStallAfter: 10 * time.Minute, Now: now,
			AutoFailover: true, FailureThreshold: 3}
	}
	cases := []struct {
		name                string
		snap                Snapshot
		roll, handoff, stop string // stop: a part of RolloutStalled
	}{
		{name: "nothing to roll", snap: snap(cluster("new", "new", "new"))},
		{name: "not OnDelete: the StatefulSet controller rolls", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			s.UpdateRevision = ""
			return s
		}()},
		{name: "replicas first, highest ordinal first", snap: snap(cluster("old", "old", "old")), roll: "db-2"},
		{name: "then the next replica", snap: snap(cluster("old", "old", "new")), roll: "db-1"},
		{name: "then the master hands over to an updated replica", snap: snap(cluster("old", "new", "new")), handoff: "db-1"},
		{name: "the old master, a replica now, is rolled last", snap: func() Snapshot {
			s := snap(cluster("old", "new", "new"))
			s.Master = "db-1"
			s.Servers = []Server{
				at(srv(t, "db-0", 0, "ro", "0-100-50", "db-1"), "old"),
				at(srv(t, "db-1", 1, "rw", "0-100-50", ""), "new"),
				at(srv(t, "db-2", 2, "ro", "0-100-50", "db-1"), "new"),
			}
			return s
		}(), roll: "db-0"},
		{name: "a rolled replica that replicates but has not caught up: wait", snap: func() Snapshot {
			s := snap(cluster("old", "old", "new"))
			s.Servers[2].Lag = 20 * time.Second // healthy (within max-lag 30 s), not caught up
			return s
		}()},
		{name: "a rolled replica not healthy yet: wait", snap: func() Snapshot {
			s := snap(cluster("old", "old", "new"))
			s.Servers[2].Ready = false
			s.Servers[2].Created = now.Add(-time.Minute)
			return s
		}()},
		{name: "a rolled replica not healthy for too long: stop, with a reason", snap: func() Snapshot {
			s := snap(cluster("old", "old", "new"))
			s.Servers[2].Reachable, s.Servers[2].Err = false, "connection refused"
			s.Servers[2].Created = now.Add(-11 * time.Minute)
			return s
		}(), stop: "db-2 runs revision new and is not healthy (connection refused); 2 pod(s) keep the old revision"},
		{name: "a rolled replica whose image does not pull: stop at once", snap: func() Snapshot {
			s := snap(cluster("old", "old", "new"))
			s.Servers[2].Reachable, s.Servers[2].Ready, s.Servers[2].Addr = false, false, ""
			s.Servers[2].Broken = "container mariadb: ImagePullBackOff"
			s.Servers[2].Created = now.Add(-time.Minute)
			return s
		}(), stop: "ImagePullBackOff"},
		{name: "a healthy replica waits while another is not healthy", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			s.Servers[1].Lag = time.Hour // lagging: not healthy, but stale
			return s
		}(), roll: "db-1"}, // the unhealthy stale one goes first: it serves nothing
		{name: "a pod missing (deleted, not recreated yet): wait", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			s.Servers = s.Servers[:2] // db-2 deleted, not recreated yet
			s.Replicas = 3
			return s
		}()},
		{name: "a pod terminating: wait", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			s.Servers[2].Terminating = true
			return s
		}()},
		{name: "the master down: failover first, no rollout", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			s.Servers[0].Reachable, s.Servers[0].Err = false, "connection refused"
			s.MasterFailures = 1
			return s
		}()},
		{name: "a takeover requested: the request first", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old"))
			target := "db-1"
			s.TakeoverTo = &target
			return s
		}()},
		{name: "a single server is rolled in place", snap: func() Snapshot {
			s := snap(cluster("old", "old", "old")[:1])
			s.SemiSync, s.Durable = false, false
			return s
		}(), roll: "db-0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Decide(c.snap)
			if p.Roll != c.roll || p.RollHandoff != c.handoff {
				t.Errorf("roll %q, hand-over %q; want %q, %q (reasons %q)", p.Roll, p.RollHandoff, c.roll, c.handoff, p.Reasons)
			}
			if (c.stop == "") != (p.RolloutStalled == "") || !strings.Contains(p.RolloutStalled, c.stop) {
				t.Errorf("stalled %q, want it to say %q", p.RolloutStalled, c.stop)
			}
		})
	}
}
