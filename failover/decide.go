// Package failover is replicant's controller: for every labelled StatefulSet it keeps
// the credentials Secret, the <sts>-master / <sts>-replicas Services and its own state
// (state.go), probes every member server, publishes role and health labels, status
// annotations and Events, bootstraps replication, fails over, and carries out
// takeovers, hand-overs and the other requests.
//
// It works in separate steps, as the bugs hide in the middle one:
//   - observe (observe.go): one Snapshot of the cluster, every server probed;
//   - decide (this file): a pure function from Snapshot to Plan, table-tested and
//     driven through random schedules by a simulation (sim_test.go); every decision,
//     requests included, is in the Plan;
//   - act (act.go): the Plan carried out in a fixed order, stopping at the first step
//     whose failure could make two writers;
//   - publish (publish.go): labels, status, Events.
//
// docs/failover.md gives the safety argument.
//
// Only the elected leader of the managers runs it: one writer of truth.
package failover

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

// Server is one pod as observed.
type Server struct {
	Pod     string
	Ordinal int64
	// Addr is where the controller reaches the server (pod IP:3306); empty when the
	// pod has no IP yet.
	Addr string
	// SourceHost is the name replicas use to replicate from this server.
	SourceHost string
	// Reachable is false when the probe failed; Err says why.
	Reachable bool
	Err       string
	State     mysql.State
	// Lag is the heartbeat lag of a replica (-1 when unknown).
	Lag time.Duration
	// CloneGTID is the position a clone of this pod ended at; CloneKnown says its
	// sidecar answered (CloneGTID "" then means: not cloned).
	CloneGTID  string
	CloneKnown bool
	// Detached: a reset-replica request detached this replica; it is not repointed
	// until the pod's detached annotation is removed. ResetRequested: the request is
	// pending on the pod.
	Detached, ResetRequested bool
	// Terminating: the pod is being deleted (a pod deletion, a scale-down, a node
	// drain). Its server may still run: its preStop hook holds it until read-only.
	Terminating bool
	// Login is the account the probe succeeded with: replicant's admin, or root on a
	// server that does not have replicant's users yet.
	Login mysql.User
	// Initializing: the pod's init containers are still running, so its server has
	// not run in this pod: it answers nothing yet, and acknowledged nothing.
	Initializing bool
	// UID identifies the pod (a rolling update deletes exactly the pod it decided on).
	// Revision is the StatefulSet revision it runs (its controller-revision-hash
	// label), Created when it was created, Ready its Ready condition. Broken says why
	// one of its containers cannot run (ImagePullBackOff, CrashLoopBackOff, ...).
	UID      string
	Revision string
	Created  time.Time
	Ready    bool
	Broken   string
}

// Snapshot is the whole cluster at one instant.
type Snapshot struct {
	Cluster string
	// Master is the pod the controller last made master (its state), "" for none:
	// then it is reconstructed from the servers, or the cluster is new.
	Master  string
	Servers []Server
	MaxLag  time.Duration
	// Replicas is the StatefulSet's desired replica count: pods with a higher ordinal
	// are going away and never chosen as master.
	Replicas int64

	// AutoFailover is the failover annotation (auto).
	AutoFailover bool
	// MasterFailures counts the consecutive probes of the master that failed;
	// FailureThreshold is how many make it down.
	MasterFailures, FailureThreshold int
	// LastFailover is when the last automatic failover happened; no other one
	// starts within AntiFlap of it.
	LastFailover time.Time
	AntiFlap     time.Duration
	Now          time.Time

	// Quarantined are the pods the state lists with errant transactions.
	Quarantined map[string]string
	// Promoting is the replica a promotion that has not ended stopped receiving (the
	// state).
	Promoting string
	// SemiSync: durability semi-sync. Durable: the master's commits wait for a
	// replica since position SemiSyncFrom (the state). A failover is lossless only to
	// a replica that received SemiSyncFrom and is the most advanced of every server
	// that may have acknowledged a commit.
	SemiSync     bool
	Durable      bool
	SemiSyncFrom mysql.GTIDSet
	// MasterSource is the address the master's replicas replicate from (the state).
	MasterSource string
	// FailoverTo and TakeoverTo are the pending requests on the StatefulSet (nil:
	// none); a server's ResetRequested is a reset-replica request on its pod.
	FailoverTo, TakeoverTo *string
	// UpdateRevision is the revision the StatefulSet's pods should run when the
	// controller rolls them (its updateStrategy is OnDelete, as the webhook sets it);
	// "" when it does not. A rolled pod not healthy RolloutStallAfter after it was
	// created stops the rollout with an Event (it stops anyway until it is healthy).
	UpdateRevision    string
	RolloutStallAfter time.Duration
	// WritesSafeAt is the earliest time another server than the recorded master may
	// take writes: the master's write lease (the last one this controller granted, or
	// one a previous controller may have granted) has run out and its sidecar has
	// fenced it by then.
	WritesSafeAt time.Time
}

// Plan is what the controller does next.
type Plan struct {
	// Bootstrap names the pod to make the first master.
	Bootstrap string
	// Fence lists servers other than the master that are writable: made read-only.
	Fence []string
	// Repoint lists replicas to point at the master (stopped, CHANGE MASTER, started).
	Repoint []string
	// Start lists replicas configured for the master whose replication is stopped
	// without an error: a restarted server (skip_slave_start) waiting for the controller.
	Start []string
	// Quarantine lists servers with errant transactions: kept read-only and out of
	// the Services, with the errant GTIDs.
	Quarantine map[string]mysql.GTIDSet
	// Roles and Healthy are the labels every pod should carry.
	Roles   map[string]string
	Healthy map[string]bool
	// OpenWrites: the master is read-only (a promotion or bootstrap that stopped half
	// way): open writes on it, after fencing.
	OpenWrites bool
	// Promote names the replica to promote because the master is down.
	Promote string
	// Handoff names the replica a graceful takeover moves the master to because the
	// master's pod is terminating.
	Handoff string
	// Held says why a failover that the evidence calls for is not carried out.
	Held string
	// Wait says why a failover that will happen waits (the old master's write lease).
	Wait string
	// Adopt names the master reconstructed from the servers when the controller has
	// no state: the only writable server, or the one every replica follows.
	Adopt string
	// EnableSemiSync: the writable master's commits do not wait for a replica yet
	// and one can acknowledge them: switch it on (and record the position).
	// DisableSemiSync: a single-server cluster's master must not wait for anyone.
	EnableSemiSync, DisableSemiSync bool
	// SemiSyncOff lists servers other than the master whose commits still wait for
	// replicas (an old master back after a failover): switched off after fencing,
	// before they replicate, or their replication thread's own commits would wait
	// for an acknowledgement nobody sends, for ever.
	SemiSyncOff []string
	// ClearPromoting: the replica a promotion left stopped replicates again (or is
	// master): forget it.
	ClearPromoting bool
	// Unquarantine lists quarantined pods whose errant transactions are gone
	// (re-cloned): they rejoin.
	Unquarantine []string
	// A rolling update, when nothing else is to be done: Roll names the pod to delete
	// so that the StatefulSet recreates it at the update revision (replicas first,
	// one at a time, each once every other server is healthy); RollHandoff names the
	// updated replica the master is handed over to before it is rolled itself;
	// RolloutStalled says why the rollout stopped (a rolled pod that does not come
	// back healthy).
	Roll, RollHandoff, RolloutStalled string

	// Requests, decided here like everything else. Forced: a failover-to request,
	// carried out before anything but fencing (a human asked); Takeover: a
	// takeover-to request, after a hand-over, which wins over it; Reset: the
	// reset-replica requests to carry out. Refused says why a request is refused, by
	// request (failover-to, takeover-to, or reset-replica/<pod>).
	Forced   *ForcedFailover
	Takeover string
	Reset    []string
	Refused  map[string]string
	// Reasons explain the decisions, for logs and events.
	Reasons []string
}

// ForcedFailover is a failover-to request the plan carries out: promote Target (the
// request names it, or "any" chose it). WaitLease: the old master cannot be reached,
// and its write lease has not run out yet: the request waits.
type ForcedFailover struct {
	Request, Target string
	WaitLease       bool
}

// Request keys of Plan.Refused.
const (
	RequestFailoverTo   = "failover-to"
	RequestTakeoverTo   = "takeover-to"
	RequestResetReplica = "reset-replica"
)

// Label values.
const (
	RoleMaster  = "master"
	RoleReplica = "replica"
)

func (s Snapshot) server(pod string) *Server {
	for i := range s.Servers {
		if s.Servers[i].Pod == pod {
			return &s.Servers[i]
		}
	}
	return nil
}

// Decide turns a snapshot into a plan. It never opens writes on more than one server:
// a writable server that is not the master is fenced first.
func Decide(s Snapshot) Plan {
	p := Plan{Roles: map[string]string{}, Healthy: map[string]bool{}, Quarantine: map[string]mysql.GTIDSet{}}
	master := s.server(s.Master)

	if master == nil {
		first := decideFirstMaster(s, &p)
		if first == "" {
			for _, srv := range s.Servers {
				p.Roles[srv.Pod], p.Healthy[srv.Pod] = RoleReplica, false
				if s.Quarantined[srv.Pod] != "" {
					p.Quarantine[srv.Pod] = recordedErrant(s.Quarantined[srv.Pod])
				}
			}
			return p
		}
		master = s.server(first)
	}

	if !master.Reachable {
		decideFailover(s, *master, &p)
	}

	anyHealthy := false
	for _, srv := range s.Servers {
		if srv.Pod == master.Pod {
			p.Roles[srv.Pod] = RoleMaster
			p.Healthy[srv.Pod] = srv.Reachable
			if srv.Reachable && srv.State.ReadOnly && p.Bootstrap == "" {
				p.OpenWrites = true
				p.Reasons = append(p.Reasons, fmt.Sprintf("master %s is read-only: open writes", srv.Pod))
			}
			continue
		}
		p.Roles[srv.Pod] = RoleReplica
		if !srv.Reachable {
			p.Healthy[srv.Pod] = false
			continue
		}
		if !srv.State.ReadOnly {
			p.Fence = append(p.Fence, srv.Pod)
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s is writable but not the master: fence it", srv.Pod))
		}
		if srv.State.SemiSync.MasterEnabled {
			p.SemiSyncOff = append(p.SemiSyncOff, srv.Pod)
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s is not the master but its commits wait for replicas: semi-sync master side off", srv.Pod))
		}
		if !master.Reachable || srv.Detached || srv.Terminating {
			p.Healthy[srv.Pod] = false
			continue
		}
		// The master is observed last, so a replica's binlog holds nothing the master
		// had not written by then, unless it is errant.
		if errant := srv.State.BinlogState.ErrantBeyond(master.State.BinlogState, master.State.ReplicaPos); !errant.Empty() {
			p.Quarantine[srv.Pod] = errant
			p.Healthy[srv.Pod] = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s has errant transactions %v: quarantined", srv.Pod, errant))
			continue
		}
		if s.Quarantined[srv.Pod] != "" {
			p.Unquarantine = append(p.Unquarantine, srv.Pod)
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s no longer holds errant transactions (re-cloned): it rejoins", srv.Pod))
		}
		if !pointsAt(srv, *master) && srv.State.Replica == nil && srv.State.BinlogState.Empty() && !srv.CloneKnown {
			// A server that never replicated, with an empty binlog: a fresh clone,
			// whose replication must start where the clone ended, which only its
			// sidecar knows. Started from anywhere else it would apply transactions
			// its data already holds (found by the demo: duplicate keys on the
			// heartbeat table, both replicas stopped).
			p.Healthy[srv.Pod] = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s: waiting for its sidecar to say where its clone ended before it replicates", srv.Pod))
			continue
		}
		if !pointsAt(srv, *master) {
			p.Repoint = append(p.Repoint, srv.Pod)
			p.Healthy[srv.Pod] = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s does not replicate from %s: repoint it", srv.Pod, master.Pod))
			continue
		}
		if r := srv.State.Replica; r.IORunning == "No" && !r.SQLRunning && r.LastIOErrno == 0 && r.LastSQLErrno == 0 {
			p.Start = append(p.Start, srv.Pod)
			p.Healthy[srv.Pod] = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s replicates from %s but both threads are stopped (restarted): start them", srv.Pod, master.Pod))
			continue
		}
		if r := srv.State.Replica; (srv.Pod == s.Promoting || p.Adopt != "") && r.IORunning == "No" && r.LastIOErrno == 0 && r.LastSQLErrno == 0 {
			// A promotion stopped its IO thread and did not end; the master is back.
			// Without a state (deleted), any such promotion is forgotten: the adopted
			// master's stopped replicas are all started. Otherwise an IO thread
			// someone else stopped is left alone.
			p.Start = append(p.Start, srv.Pod)
			p.Healthy[srv.Pod] = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("%s: its IO thread is stopped, by a promotion that did not end or before the state was lost: start it again", srv.Pod))
			continue
		}
		if srv.Pod == s.Promoting {
			p.ClearPromoting = true
		}
		p.Healthy[srv.Pod] = srv.State.Replica.Replicating() && srv.Lag >= 0 && srv.Lag <= s.MaxLag
		anyHealthy = anyHealthy || p.Healthy[srv.Pod]
	}
	// Servers the state quarantined keep that mark until compared with a reachable
	// master again (above).
	for pod := range s.Quarantined {
		if _, still := p.Quarantine[pod]; !still && !slices.Contains(p.Unquarantine, pod) {
			p.Quarantine[pod] = recordedErrant(s.Quarantined[pod])
			p.Healthy[pod] = false
		}
	}
	if master.Reachable && p.Bootstrap == "" && p.Promote == "" {
		ss := master.State.SemiSync
		switch {
		case s.SemiSync && s.Replicas > 1 && !ss.MasterEnabled && !master.State.ReadOnly && (s.Durable || anyHealthy):
			p.EnableSemiSync = true
			p.Reasons = append(p.Reasons, fmt.Sprintf("master %s: commits do not wait for a replica yet: semi-sync on", master.Pod))
		case s.Replicas <= 1 && ss.MasterEnabled:
			p.DisableSemiSync = true
			p.Reasons = append(p.Reasons, fmt.Sprintf("master %s is the only server: its commits cannot wait for a replica", master.Pod))
		}
	}
	if master.Reachable && master.Terminating && p.Bootstrap == "" {
		decideHandoff(s, *master, &p)
	}
	decideRequests(s, &p)
	decideRollout(s, &p)
	return p
}

// RolloutCaughtUp is the lag under which a rolled replica has caught up, so that the
// rollout goes on.
const RolloutCaughtUp = 5 * time.Second

// decideRollout rolls the pods that run an old revision of the StatefulSet, when the
// cluster is settled and nothing else is to be done: replicas first, one at a time,
// each once every other server is healthy and the last one rolled came back healthy
// and caught up (replicating, lag under RolloutCaughtUp); then the master hands over to an updated replica
// and is rolled last, as a replica. A rolled pod that does not come back healthy
// stops the rollout: the pods not rolled yet keep their revision.
func decideRollout(s Snapshot, p *Plan) {
	if s.UpdateRevision == "" {
		return
	}
	var stale []Server
	for _, srv := range s.Servers {
		if srv.Revision != "" && srv.Revision != s.UpdateRevision {
			stale = append(stale, srv)
		}
	}
	if len(stale) == 0 {
		return
	}
	master := s.server(s.Master)
	busy := p.Bootstrap != "" || p.Promote != "" || p.Handoff != "" || p.Takeover != "" || p.Forced != nil ||
		p.OpenWrites || p.Adopt != "" || p.Held != "" || p.Wait != "" ||
		len(p.Fence)+len(p.Repoint)+len(p.Start)+len(p.Reset)+len(p.SemiSyncOff) > 0
	if busy || master == nil || !master.Reachable || master.State.ReadOnly {
		return
	}
	if int64(len(s.Servers)) < s.Replicas {
		p.Reasons = append(p.Reasons, "rolling update: waiting for every pod to exist")
		return
	}
	for _, srv := range s.Servers {
		if srv.Terminating {
			p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: waiting for %s to go", srv.Pod))
			return
		}
		if srv.Revision != s.UpdateRevision {
			continue
		}
		if p.Healthy[srv.Pod] && srv.Ready {
			if srv.Pod != master.Pod && srv.Lag > RolloutCaughtUp {
				p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: waiting for %s to catch up (lag %v)", srv.Pod, srv.Lag))
				return
			}
			continue
		}
		why := "not healthy yet"
		switch {
		case srv.Broken != "":
			why = srv.Broken
		case srv.Err != "":
			why = srv.Err
		case !srv.Ready:
			why = "not Ready"
		}
		if srv.Broken != "" || (s.RolloutStallAfter > 0 && s.Now.Sub(srv.Created) > s.RolloutStallAfter) {
			p.RolloutStalled = fmt.Sprintf("rolling update stopped: %s runs revision %s and is not healthy (%s); %d pod(s) keep the old revision until it is (fix the StatefulSet, e.g. its image: the rollout goes on)",
				srv.Pod, s.UpdateRevision, why, len(stale))
			p.Reasons = append(p.Reasons, p.RolloutStalled)
			return
		}
		p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: waiting for %s to be healthy (%s)", srv.Pod, why))
		return
	}
	// A stale replica that serves nothing goes first; a healthy one only when every
	// other server is healthy, so that at most one is ever missing.
	var replicas []Server
	for _, srv := range stale {
		if srv.Pod != master.Pod {
			replicas = append(replicas, srv)
		}
	}
	sort.SliceStable(replicas, func(i, j int) bool {
		hi, hj := p.Healthy[replicas[i].Pod] && replicas[i].Ready, p.Healthy[replicas[j].Pod] && replicas[j].Ready
		if hi != hj {
			return !hi
		}
		return replicas[i].Ordinal > replicas[j].Ordinal
	})
	if len(replicas) > 0 {
		next := replicas[0]
		if p.Healthy[next.Pod] && next.Ready {
			for _, srv := range s.Servers {
				if srv.Pod != next.Pod && srv.Pod != master.Pod && !(p.Healthy[srv.Pod] && srv.Ready) {
					p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: %s waits, %s is not healthy", next.Pod, srv.Pod))
					return
				}
			}
		}
		p.Roll = next.Pod
		p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: %s runs revision %s, roll it to %s", next.Pod, next.Revision, s.UpdateRevision))
		return
	}
	// Only the master is left.
	var updated []Server
	for _, srv := range s.Servers {
		if srv.Pod != master.Pod && p.Healthy[srv.Pod] && srv.Ready && (s.Replicas == 0 || srv.Ordinal < s.Replicas) {
			updated = append(updated, srv)
		}
	}
	if len(updated) == 0 {
		if s.Replicas <= 1 {
			p.Roll = master.Pod
			p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: %s is the only server: roll it (writes stop until it is back)", master.Pod))
		}
		return
	}
	p.RollHandoff = MostAdvanced(updated).Pod
	p.Reasons = append(p.Reasons, fmt.Sprintf("rolling update: every replica runs revision %s: hand master %s over to %s, then roll it", s.UpdateRevision, master.Pod, p.RollHandoff))
}

// decideRequests orders the human requests: a forced failover comes first and
// replaces any automatic decision but fencing; a takeover waits for a settled master
// and gives way to a hand-over; reset-replica requests are carried out or refused.
func decideRequests(s Snapshot, p *Plan) {
	p.Refused = map[string]string{}
	if s.FailoverTo != nil {
		target, err := FailoverTarget(s, *p, *s.FailoverTo)
		if err != nil {
			p.Refused[RequestFailoverTo] = err.Error()
		} else {
			f := &ForcedFailover{Request: *s.FailoverTo, Target: target}
			if m := s.server(s.Master); m != nil && !m.Reachable && s.Now.Before(s.WritesSafeAt) {
				f.WaitLease = true
			}
			p.Forced = f
			// A human asked: no automatic decision competes with it this round.
			p.Bootstrap, p.Promote, p.OpenWrites, p.Handoff, p.Adopt = "", "", false, "", ""
			p.Reasons = append(p.Reasons, fmt.Sprintf("failover to %s requested: promote %s", *s.FailoverTo, target))
		}
	}
	if s.TakeoverTo != nil && p.Forced == nil && p.Handoff == "" {
		if err := ValidateTakeover(s, *p, *s.TakeoverTo); err != nil {
			p.Refused[RequestTakeoverTo] = err.Error()
		} else {
			p.Takeover = *s.TakeoverTo
		}
	}
	if p.Forced != nil || p.Promote != "" {
		return // resets wait for a settled master
	}
	for _, srv := range s.Servers {
		if !srv.ResetRequested {
			continue
		}
		if err := ValidateResetReplica(s, srv.Pod); err != nil {
			p.Refused[RequestResetReplica+"/"+srv.Pod] = err.Error()
			continue
		}
		p.Reset = append(p.Reset, srv.Pod)
		p.Repoint = slices.DeleteFunc(p.Repoint, func(pod string) bool { return pod == srv.Pod })
		p.Start = slices.DeleteFunc(p.Start, func(pod string) bool { return pod == srv.Pod })
	}
}

// decideFirstMaster chooses the master of a cluster the controller has no state for:
// a new cluster, a StatefulSet that just opted in, or a state that was lost. It never
// guesses: the only writable server is the master; else the one every replica
// follows; else, once every started server answers, the one whose data includes
// everybody else's is bootstrapped (ordinal 0 of a new cluster). Anything else holds.
func decideFirstMaster(s Snapshot, p *Plan) string {
	var reachable, writable []Server
	var silent []string
	for _, srv := range s.Servers {
		switch {
		case srv.Reachable:
			reachable = append(reachable, srv)
			if !srv.State.ReadOnly {
				writable = append(writable, srv)
			}
		case srv.Addr != "" && !srv.Initializing:
			silent = append(silent, srv.Pod)
		}
	}
	switch {
	case len(writable) == 1:
		p.Adopt = writable[0].Pod
		p.Reasons = append(p.Reasons, fmt.Sprintf("no recorded master: %s is the only writable server", p.Adopt))
		return p.Adopt
	case len(writable) > 1:
		for _, srv := range writable {
			p.Fence = append(p.Fence, srv.Pod)
		}
		p.Held = fmt.Sprintf("no recorded master and %d writable servers: all fenced; the next round chooses among read-only servers", len(writable))
		p.Reasons = append(p.Reasons, p.Held)
		return ""
	}
	followed := map[string]bool{}
	for _, srv := range reachable {
		if r := srv.State.Replica; r != nil && r.SourceHost != "" {
			followed[r.SourceHost] = true
		}
	}
	if len(followed) > 0 {
		for _, srv := range reachable {
			if len(followed) == 1 && followed[srv.SourceHost] {
				p.Adopt = srv.Pod
				p.Reasons = append(p.Reasons, fmt.Sprintf("no recorded master: every replica follows %s", p.Adopt))
				return p.Adopt
			}
		}
		p.Held = fmt.Sprintf("no recorded master, and the replicas follow %v, not one server that answers: waiting (or a failover-to request)", keysOf(followed))
		p.Reasons = append(p.Reasons, p.Held)
		return ""
	}
	if len(silent) > 0 {
		p.Wait = fmt.Sprintf("no recorded master: waiting for %v to answer before choosing the first one", silent)
		p.Reasons = append(p.Reasons, p.Wait)
		return ""
	}
	if len(reachable) == 0 {
		p.Reasons = append(p.Reasons, "no server reachable: nothing to bootstrap yet")
		return ""
	}
	sort.SliceStable(reachable, func(i, j int) bool {
		a, b := reachable[i].State.BinlogState, reachable[j].State.BinlogState
		if c := a.Ahead(b); c != 0 {
			return c > 0
		}
		return reachable[i].Ordinal < reachable[j].Ordinal
	})
	best := reachable[0]
	for _, srv := range reachable[1:] {
		if !srv.State.BinlogState.ErrantBeyond(best.State.BinlogState, best.State.ReplicaPos).Empty() {
			p.Held = fmt.Sprintf("no recorded master, and the servers' data diverge (%s holds %s, %s holds %s): choose with a failover-to request",
				best.Pod, best.State.BinlogState, srv.Pod, srv.State.BinlogState)
			p.Reasons = append(p.Reasons, p.Held)
			return ""
		}
	}
	if s.Now.Before(s.WritesSafeAt) {
		p.Wait = fmt.Sprintf("bootstrap of %s waits %s for any write lease a previous controller granted", best.Pod, s.WritesSafeAt.Sub(s.Now).Round(time.Millisecond))
		p.Reasons = append(p.Reasons, p.Wait)
		return ""
	}
	p.Bootstrap = best.Pod
	p.Reasons = append(p.Reasons, fmt.Sprintf("bootstrap: %s holds the most data (%s)", p.Bootstrap, best.State.BinlogState))
	return p.Bootstrap
}

// recordedErrant is the errant GTIDs the state recorded for a pod (never empty, so
// that a recorded quarantine always counts as one).
func recordedErrant(recorded string) mysql.GTIDSet {
	set, _ := mysql.ParseGTIDSet(recorded) // unreadable: still quarantined, GTIDs unknown
	return set
}

func keysOf(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// decideHandoff: the master's pod is being deleted while its server still runs (its
// preStop hook waits for read-only). Hand the role over gracefully to the most
// advanced healthy replica, preferring pods the StatefulSet keeps: a scale-down
// removes the highest ordinals one by one.
func decideHandoff(s Snapshot, master Server, p *Plan) {
	var kept, any []Server
	for _, srv := range s.Servers {
		if srv.Pod == master.Pod || srv.Terminating || !p.Healthy[srv.Pod] {
			continue
		}
		any = append(any, srv)
		if s.Replicas == 0 || srv.Ordinal < s.Replicas {
			kept = append(kept, srv)
		}
	}
	if len(kept) == 0 {
		kept = any
	}
	if len(kept) == 0 {
		p.Reasons = append(p.Reasons, fmt.Sprintf("master %s is terminating and no healthy replica can take over: it stops as master", master.Pod))
		return
	}
	p.Handoff = MostAdvanced(kept).Pod
	p.Reasons = append(p.Reasons, fmt.Sprintf("master %s is terminating: graceful takeover to %s", master.Pod, p.Handoff))
}

// pointsAt reports whether srv is configured to replicate from master.
func pointsAt(srv, master Server) bool {
	r := srv.State.Replica
	return r != nil && r.SourceHost == master.SourceHost && r.UsingGTID != "No"
}

// decideFailover: the master is unreachable. Fail over only on holistic evidence,
// and only to a replica that provably holds every acknowledged write:
//   - the controller failed to reach the master FailureThreshold times in a row, and
//     its pod is gone or a replica that followed it lost it too (a replica stopped
//     long ago on an error proves nothing), and no reachable one still receives;
//   - the candidate followed the master, is not quarantined, detached or
//     terminating, and has no SQL error (it must apply its relay log);
//   - with semi-sync, every server that may have acknowledged a commit answers (a
//     commit waits for one replica; the one that acknowledged the last commits may be
//     the one that does not answer), the candidate received the most of them all, and
//     at least the position from which the master's commits waited;
//   - the master's write lease has run out (its sidecar fenced it, if it still runs).
//
// Anything else holds, says why, and waits for a human request (failover-to).
func decideFailover(s Snapshot, master Server, p *Plan) {
	if s.MasterFailures < s.FailureThreshold {
		return
	}
	masterGone := master.Addr == "" || master.Terminating
	var candidates []Server
	// others: what every other server may have acknowledged (received from the
	// master). A quarantined replica still receives and acknowledges the master's
	// commits: it is never a candidate, but what it received counts; its own errant
	// transactions do not (its IO thread's position only).
	type acked struct {
		pod string
		pos mysql.GTIDSet
	}
	var others []acked
	var silent []string
	receiving, witnesses := false, 0
	for _, srv := range s.Servers {
		if srv.Pod == master.Pod {
			continue
		}
		quarantined := s.Quarantined[srv.Pod] != ""
		if !srv.Reachable {
			if srv.Addr != "" && !srv.Initializing && !srv.Detached {
				silent = append(silent, srv.Pod)
			}
			continue
		}
		r := srv.State.Replica
		followed := r != nil && (s.MasterSource == "" || r.SourceHost == s.MasterSource)
		if followed && r.IORunning == "Yes" {
			receiving = true
		}
		// The replica a promotion that did not end stopped was a witness when it
		// began (a promotion needs one): stopping it must not leave the next attempt
		// without its word (found by the e2e suite: a timed-out STOP on MySQL, then
		// a cluster held without a master).
		if followed && (r.IORunning == "Connecting" || srv.Pod == s.Promoting && r.IORunning == "No") {
			witnesses++
		}
		if srv.Detached {
			continue
		}
		switch {
		case !quarantined:
			others = append(others, acked{srv.Pod, holds(srv)})
		case followed:
			others = append(others, acked{srv.Pod, r.ReceivedPos})
		}
		if !quarantined && followed && !srv.Terminating && r.LastSQLErrno == 0 {
			candidates = append(candidates, srv)
		}
	}
	hold := func(why string) {
		p.Held = why
		p.Reasons = append(p.Reasons, why)
	}
	switch {
	case receiving && !masterGone:
		hold(fmt.Sprintf("master %s unreachable from the controller, but replicas still receive from it: not failing over", master.Pod))
		return
	case witnesses == 0 && !masterGone:
		hold(fmt.Sprintf("master %s unreachable from the controller, and no replica that followed it is trying to reach it: nothing confirms it is down", master.Pod))
		return
	case !s.AutoFailover:
		hold(fmt.Sprintf("master %s is down; failover is manual (replicant.dev/failover): waiting for a request", master.Pod))
		return
	case !s.LastFailover.IsZero() && s.Now.Sub(s.LastFailover) < s.AntiFlap:
		hold(fmt.Sprintf("master %s is down, but the last failover ended at %s, inside the anti-flapping window of %s: waiting for a request (replicant.dev/failover-to)",
			master.Pod, s.LastFailover.UTC().Format(time.RFC3339), s.AntiFlap))
		return
	case len(candidates) == 0:
		hold(fmt.Sprintf("master %s is down and no replica that followed it can take over", master.Pod))
		return
	}
	best := MostAdvanced(candidates)
	if s.SemiSync {
		// Only a candidate that holds everything any other server received, GTID by
		// GTID (a divergent history with the same sequence numbers is not "as far").
		var complete []Server
		var lacking string
		for _, c := range candidates {
			ok := true
			for _, o := range others {
				if o.pod != c.Pod && !holds(c).Contains(o.pos) {
					ok = false
					if lacking == "" {
						lacking = fmt.Sprintf("%s lacks %v, which %s received", c.Pod, o.pos.Errant(holds(c)), o.pod)
					}
					break
				}
			}
			if ok {
				complete = append(complete, c)
			}
		}
		switch {
		case len(silent) > 0:
			hold(fmt.Sprintf("master %s is down, but %v do not answer: one of them may hold acknowledged writes the others lack; waiting for them (or a failover-to request)", master.Pod, silent))
			return
		case !s.Durable:
			hold(fmt.Sprintf("master %s is down, and its commits were not waiting for a replica (semi-sync was off): a failover could lose acknowledged writes; waiting for it (or a failover-to request)", master.Pod))
			return
		case len(complete) == 0:
			hold(fmt.Sprintf("master %s is down, and no replica that can take over received everything the others did (%s): waiting (or a failover-to request)", master.Pod, lacking))
			return
		}
		best = MostAdvanced(complete)
		if !holds(best).Contains(s.SemiSyncFrom) {
			hold(fmt.Sprintf("master %s is down, and %s, the most advanced replica, did not receive %s, from which commits waited for a replica: waiting (or a failover-to request)", master.Pod, best.Pod, s.SemiSyncFrom))
			return
		}
	}
	if s.Now.Before(s.WritesSafeAt) {
		p.Wait = fmt.Sprintf("master %s is down: promoting %s once its write lease has run out, in %s", master.Pod, best.Pod, s.WritesSafeAt.Sub(s.Now).Round(time.Millisecond))
		p.Reasons = append(p.Reasons, p.Wait)
		return
	}
	p.Promote = best.Pod
	p.Reasons = append(p.Reasons, fmt.Sprintf("master %s down (%d failed probes, replicas agree): promote %s, the most advanced (received %s)",
		master.Pod, s.MasterFailures, best.Pod, received(best)))
}

func isQuarantined(p Plan, pod string) bool {
	_, q := p.Quarantine[pod]
	return q
}

// holds is every transaction a server has, GTID by GTID: its binlog and what its IO
// thread received, applied or not.
func holds(s Server) mysql.GTIDSet {
	set := s.State.BinlogState.Union(s.State.CurrentPos)
	if s.State.Replica != nil {
		set = set.Union(s.State.Replica.ReceivedPos)
	}
	return set
}

// received is what a replica holds or has received (applied or still in its relay
// log): what it can apply before it takes writes.
func received(s Server) mysql.GTIDSet {
	set := s.State.CurrentPos
	if s.State.Replica != nil {
		set = set.Union(s.State.Replica.ReceivedPos)
	}
	return set.Position()
}

// MostAdvanced picks the replica that received the most (GTID positions, never binlog
// file positions), then the least lag, then the lowest ordinal.
func MostAdvanced(candidates []Server) Server {
	sorted := append([]Server(nil), candidates...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if c := received(sorted[i]).Ahead(received(sorted[j])); c != 0 {
			return c > 0
		}
		li, lj := sorted[i].Lag, sorted[j].Lag
		if li >= 0 && lj >= 0 && li != lj {
			return li < lj
		}
		return sorted[i].Ordinal < sorted[j].Ordinal
	})
	return sorted[0]
}

// ValidateTakeover says why a graceful takeover to target cannot be done now, or nil.
// Only a healthy replica of a reachable master can take over: anything else would
// lose writes or wait for long.
func ValidateTakeover(s Snapshot, p Plan, target string) error {
	master := s.server(s.Master)
	srv := s.server(target)
	switch {
	case p.Bootstrap != "" || p.Promote != "" || master == nil:
		return fmt.Errorf("the cluster has no settled master yet")
	case !master.Reachable:
		return fmt.Errorf("master %s is unreachable: use a forced failover", master.Pod)
	case srv == nil:
		return fmt.Errorf("%s is not a pod of cluster %s", target, s.Cluster)
	case srv.Terminating:
		return fmt.Errorf("%s is terminating", target)
	case target == master.Pod:
		return fmt.Errorf("%s is already the master", target)
	case isQuarantined(p, target):
		return fmt.Errorf("%s holds errant transactions %v", target, p.Quarantine[target])
	case !p.Healthy[target]:
		return fmt.Errorf("%s is not a healthy replica (replicating, lag within %s)", target, s.MaxLag)
	}
	return nil
}

// FailoverTarget chooses the replica a forced failover promotes: the named pod, or
// with "any" the most advanced replica. A forced failover acts even when the master
// looks alive (it is fenced first) and inside the anti-flapping window: a human asked.
func FailoverTarget(s Snapshot, p Plan, request string) (string, error) {
	master := s.server(s.Master)
	if master == nil || p.Bootstrap != "" {
		return "", fmt.Errorf("the cluster has no master yet")
	}
	var candidates []Server
	var excluded []string
	for _, srv := range s.Servers {
		switch {
		case srv.Pod == master.Pod:
			continue
		case !srv.Reachable:
			excluded = append(excluded, srv.Pod+" unreachable: "+srv.Err)
			continue
		case isQuarantined(p, srv.Pod):
			excluded = append(excluded, fmt.Sprintf("%s has errant transactions %v", srv.Pod, p.Quarantine[srv.Pod]))
			continue
		case srv.Detached:
			excluded = append(excluded, srv.Pod+" is detached (reset-replica)")
			continue
		case srv.Terminating:
			excluded = append(excluded, srv.Pod+" is terminating")
			continue
		}
		if request == "any" || request == srv.Pod {
			candidates = append(candidates, srv)
		}
	}
	if len(candidates) == 0 {
		if request == "any" {
			return "", fmt.Errorf("no reachable replica without errant transactions (%s)", strings.Join(excluded, "; "))
		}
		if request == master.Pod {
			return "", fmt.Errorf("%s is already the master", request)
		}
		return "", fmt.Errorf("%s is not a reachable replica of cluster %s without errant transactions", request, s.Cluster)
	}
	return MostAdvanced(candidates).Pod, nil
}

// ValidateResetReplica says why pod cannot be detached now, or nil.
func ValidateResetReplica(s Snapshot, pod string) error {
	srv := s.server(pod)
	switch {
	case srv == nil:
		return fmt.Errorf("%s is not a pod of cluster %s", pod, s.Cluster)
	case pod == s.Master:
		return fmt.Errorf("%s is the master: take over to another pod first", pod)
	case !srv.Reachable:
		return fmt.Errorf("%s is unreachable: %s", pod, srv.Err)
	}
	return nil
}
