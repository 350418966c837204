package failover

// A deterministic simulation of a replicant cluster: N servers with binlogs, relay
// logs, read_only, replication threads, semi-sync acknowledgement and the sidecar's
// write lease; clients inside each server's partition and one outside writing to
// whoever the Services call master; faults (kill, restart, partitions of any server
// or of the controller's path, the apiserver down, the state lost, the controller
// dying between any two steps of its act phase, a sidecar restarting, a write made
// directly on a replica). The real
// Decide decides; a model of the act phase (act.go, step by step, same order)
// carries the plan out. After every step the invariants are checked:
//   - at most one server is writable;
//   - every write acknowledged to any client is in the binlog of the writable server;
//   - no quarantined server is the master.
// A failing schedule is shrunk to a minimal one and printed for replay
// (REPLICANT_SIM_SEED, REPLICANT_SIM_SCHEDULES).

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

const (
	simServers     = 3
	simProbe       = time.Second
	simLease       = 3 * time.Second
	simMargin      = 500 * time.Millisecond
	simNetTimeout  = 4 * time.Second // slave_net_timeout: a silent source is noticed after it
	simSteps       = 60
	simSidecarTick = 100 * time.Millisecond
)

type simAction struct {
	Kind string // round, kill, restart, cut, cutrst, heal, ctrlcut, ctrlheal, apidown, apiup, crash, statelost, sidecar, errant, wait
	Arg  int    // the server, or the act step the controller dies at (crash)
	Dt   time.Duration
}

func (a simAction) String() string {
	return fmt.Sprintf("%s(%d)+%s", a.Kind, a.Arg, a.Dt)
}

type simPending struct {
	gtid   mysql.GTID
	client string
}

type simServer struct {
	pod      string
	id       uint32
	alive    bool
	log      []mysql.GTID // binlog (applied)
	relay    []mysql.GTID // received, not applied yet
	readOnly bool
	source   int    // -1: no replica settings
	io       string // Yes, Connecting, No
	sql      bool
	ioErr    int
	lostAt   time.Duration // when its source became unreachable (-1: it is not)
	semi     bool          // master side of semi-sync enabled
	pending  []simPending  // commits waiting for an acknowledgement
	leased   bool          // the sidecar holds a lease (since its start)
	until    time.Duration
	maxSeq   uint64
	in       map[mysql.GTID]bool // the binlog, as a set
	state    mysql.GTIDSet       // the binlog, as @@gtid_binlog_state
	checked  int                 // acknowledged writes (w.ackedList[:checked]) verified in the binlog
	agreed   int                 // how long a prefix of its history its source's binlog shares
}

type simWorld struct {
	now       time.Duration
	servers   []*simServer
	cut       [simServers]bool // isolated from every other server and the controller
	rst       [simServers]bool // its cut refuses connections (a reset), rather than dropping packets
	ctrlCut   [simServers]bool // only the controller's path to it is broken
	apiDown   bool
	acked     map[mysql.GTID]string
	ackedList []mysql.GTID
	state     ClusterState
	stateSet  bool // the ConfigMap exists
	// the controller's memory
	ctrl struct {
		downSince time.Duration
		down      bool
		firstSeen time.Duration
		seen      bool
		grantPod  string
		grantAt   time.Duration
		crashAt   int // act step at which it dies this round (-1: none)
		step      int
	}
	nextClientID int
	trace        []string
}

func newSimWorld() *simWorld {
	w := &simWorld{acked: map[mysql.GTID]string{}}
	for i := 0; i < simServers; i++ {
		w.servers = append(w.servers, &simServer{pod: fmt.Sprintf("db-%d", i), id: uint32(100 + i), alive: true,
			readOnly: true, source: -1, io: "No", lostAt: -1, in: map[mysql.GTID]bool{}, state: mysql.GTIDSet{}})
	}
	w.ctrl.crashAt = -1
	return w
}

func (w *simWorld) at() time.Time { return time.Unix(1_800_000_000, 0).Add(w.now) }

// linked: two servers can talk.
func (w *simWorld) linked(a, b int) bool {
	return w.servers[a].alive && w.servers[b].alive && !w.cut[a] && !w.cut[b]
}

// reachable: the controller reaches the server.
func (w *simWorld) reachable(i int) bool {
	return w.servers[i].alive && !w.cut[i] && !w.ctrlCut[i]
}

func (w *simWorld) index(pod string) int {
	for i, s := range w.servers {
		if s.pod == pod {
			return i
		}
	}
	return -1
}

func (s *simServer) has(g mysql.GTID) bool { return s.in[g] }

func (s *simServer) appendLog(g mysql.GTID) {
	s.log = append(s.log, g)
	s.in[g] = true
	if s.state[g.Domain] == nil {
		s.state[g.Domain] = map[uint32]uint64{}
	}
	if g.Seq > s.state[g.Domain][g.Server] {
		s.state[g.Domain][g.Server] = g.Seq
	}
	if g.Seq > s.maxSeq {
		s.maxSeq = g.Seq
	}
}

// ack records a write acknowledged to a client.
func (w *simWorld) ack(g mysql.GTID, client string) {
	if client == "" {
		return
	}
	if _, dup := w.acked[g]; !dup {
		w.acked[g] = client
		w.ackedList = append(w.ackedList, g)
	}
}

// write commits one transaction on server i for client: it is logged, and
// acknowledged when semi-sync is off or a replica receives it; otherwise it waits.
func (w *simWorld) write(i int, client string) {
	s := w.servers[i]
	seq := s.maxSeq
	for _, g := range s.relay {
		if g.Seq > seq {
			seq = g.Seq
		}
	}
	g := mysql.GTID{Domain: 0, Server: s.id, Seq: seq + 1}
	s.appendLog(g)
	if !s.semi {
		w.ack(g, client)
		return
	}
	s.pending = append(s.pending, simPending{gtid: g, client: client})
}

// fence makes a server read-only the way the sidecar and the controller do: client
// sessions killed first (waiting commits get an error), then read_only.
func (w *simWorld) fence(i int) {
	s := w.servers[i]
	s.pending = nil
	s.readOnly = true
}

// replicate moves binlog events to connected replicas, applies relay logs, updates the
// threads' states and acknowledges waiting commits.
func (w *simWorld) replicate() {
	for ri, r := range w.servers {
		if !r.alive || r.source < 0 || r.io == "No" {
			continue
		}
		src := w.servers[r.source]
		if !w.linked(ri, r.source) {
			if r.lostAt < 0 {
				r.lostAt = w.now
			}
			if w.now-r.lostAt >= simNetTimeout || !src.alive || w.rst[r.source] {
				r.io = "Connecting"
			}
			continue
		}
		r.lostAt = -1
		// GTID auto-position: the replica's history must be a prefix of the source's.
		mine := len(r.log) + len(r.relay)
		at := func(k int) mysql.GTID {
			if k < len(r.log) {
				return r.log[k]
			}
			return r.relay[k-len(r.log)]
		}
		// Histories only grow: compare from where they last agreed.
		k := min(r.agreed, mine, len(src.log))
		for k < mine && k < len(src.log) && at(k) == src.log[k] {
			k++
		}
		r.agreed = k
		if k < mine {
			r.io, r.ioErr = "No", 1236 // the source lacks what the replica has
			continue
		}
		r.io = "Yes"
		r.relay = append(r.relay, src.log[k:]...)
	}
	for _, r := range w.servers {
		if r.alive && r.sql {
			for _, g := range r.relay {
				r.appendLog(g)
			}
			r.relay = nil
		}
	}
	for mi, m := range w.servers {
		if !m.alive || len(m.pending) == 0 {
			continue
		}
		var left []simPending
		for _, p := range m.pending {
			if w.receivedBySemiSyncReplica(mi, p.gtid) {
				w.ack(p.gtid, p.client)
			} else {
				left = append(left, p)
			}
		}
		m.pending = left
	}
}

func (w *simWorld) receivedBySemiSyncReplica(mi int, g mysql.GTID) bool {
	for ri, r := range w.servers {
		if ri == mi || r.source != mi || r.io != "Yes" || !w.linked(ri, mi) {
			continue
		}
		if r.has(g) {
			return true
		}
		for _, h := range r.relay {
			if h == g {
				return true
			}
		}
	}
	return false
}

func (w *simWorld) semiClients(mi int) int {
	n := 0
	for ri, r := range w.servers {
		if ri != mi && r.source == mi && r.io == "Yes" && w.linked(ri, mi) {
			n++
		}
	}
	return n
}

// clients: one outside client writes to the server the Services call master (reached
// only when it is not cut off); one client inside each server's partition writes to
// that server.
func (w *simWorld) clients() {
	if i := w.index(w.state.Master); i >= 0 && w.stateSet {
		s := w.servers[i]
		if s.alive && !w.cut[i] && !s.readOnly {
			w.write(i, "outside")
		}
	}
	for i, s := range w.servers {
		if s.alive && !s.readOnly {
			w.write(i, "inside-"+s.pod)
		}
	}
}

func (w *simWorld) sidecars(from, to time.Duration) {
	for _, s := range w.servers {
		if !s.alive || s.readOnly {
			continue
		}
		// The sidecar checks every 100 ms: it fences by the first tick after expiry.
		expired := !s.leased || s.until <= to
		if expired {
			w.fence(w.index(s.pod))
		}
	}
}

// observe builds the controller's Snapshot.
func (w *simWorld) observe() Snapshot {
	snap := Snapshot{Cluster: "db", Master: w.state.Master, MaxLag: 30 * time.Second, Replicas: simServers,
		AutoFailover: true, LastFailover: w.state.LastFailover, Quarantined: w.state.Quarantine, SemiSync: true,
		Durable: w.state.Durable, MasterSource: w.state.MasterSource}
	snap.SemiSyncFrom, _ = mysql.ParseGTIDSet(w.state.SemiSyncFrom)
	for i, s := range w.servers {
		srv := Server{Pod: s.pod, Ordinal: int64(i), Addr: s.pod + ":3306", Lag: -1}
		if !w.reachable(i) {
			srv.Err = "unreachable"
			snap.Servers = append(snap.Servers, srv)
			continue
		}
		srv.Reachable = true
		srv.SourceHost = s.pod
		srv.State = mysql.State{ReadOnly: s.readOnly, BinlogState: s.state, CurrentPos: s.state.Position()}
		if s.source >= 0 {
			received := srv.State.CurrentPos
			if n := len(s.relay); n > 0 {
				received = gtidSet(s.relay[n-1:])
			}
			srv.State.Replica = &mysql.ReplicaStatus{SourceHost: w.servers[s.source].pod, IORunning: s.io, SQLRunning: s.sql,
				LastIOErrno: s.ioErr, UsingGTID: "Slave_Pos", ReceivedPos: received}
			srv.Lag = 0
		}
		srv.State.SemiSync = mysql.SemiSync{MasterEnabled: s.semi, MasterActive: s.semi, MasterClients: w.semiClients(i)}
		snap.Servers = append(snap.Servers, srv)
	}
	if !w.ctrl.seen {
		w.ctrl.seen, w.ctrl.firstSeen = true, w.now
	}
	if m := snap.server(snap.Master); m != nil && !m.Reachable {
		if !w.ctrl.down {
			w.ctrl.down, w.ctrl.downSince = true, w.now
		}
		snap.MasterFailures = 1 + int((w.now-w.ctrl.downSince)/simProbe)
	} else {
		w.ctrl.down = false
	}
	snap.FailureThreshold, snap.AntiFlap, snap.Now = 3, 5*time.Minute, w.at()
	base := w.ctrl.firstSeen
	if w.ctrl.grantPod == snap.Master && w.ctrl.grantAt > base {
		base = w.ctrl.grantAt
	}
	snap.WritesSafeAt = time.Unix(1_800_000_000, 0).Add(base + simLease + simMargin)
	return snap
}

func gtidSet(log []mysql.GTID) mysql.GTIDSet {
	set := mysql.GTIDSet{}
	for _, g := range log {
		if set[g.Domain] == nil {
			set[g.Domain] = map[uint32]uint64{}
		}
		if g.Seq > set[g.Domain][g.Server] {
			set[g.Domain][g.Server] = g.Seq
		}
	}
	return set
}

// errSimCrash: the controller died in the middle of its act phase.
type simCrash struct{}

// step marks one step of the act phase; the controller dies at the chosen one.
func (w *simWorld) step() {
	w.ctrl.step++
	if w.ctrl.step == w.ctrl.crashAt {
		panic(simCrash{})
	}
}

func (w *simWorld) saveState() bool {
	w.step()
	if w.apiDown {
		return false
	}
	w.stateSet = true
	return true
}

func (w *simWorld) grantLease(i int) bool {
	w.step()
	if !w.reachable(i) {
		return false
	}
	s := w.servers[i]
	s.leased, s.until = true, w.now+simLease
	w.ctrl.grantPod, w.ctrl.grantAt = s.pod, w.now
	return true
}

// round is one reconcile: observe, the real Decide, and the act phase modelled on
// act.go step by step.
func (w *simWorld) round() {
	if w.apiDown {
		return // loadState fails: nothing happens
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(simCrash); !ok {
				panic(r)
			}
			w.trace = append(w.trace, fmt.Sprintf("controller died at act step %d", w.ctrl.crashAt))
			w.restartController()
		}
	}()
	w.ctrl.step = 0
	snap := w.observe()
	plan := Decide(snap)
	w.act(snap, plan)
	w.ctrl.crashAt = -1
}

func (w *simWorld) restartController() {
	w.ctrl.down, w.ctrl.seen, w.ctrl.grantPod, w.ctrl.crashAt = false, false, "", -1
}

func (w *simWorld) act(snap Snapshot, plan Plan) {
	for _, pod := range plan.Fence {
		w.step()
		i := w.index(pod)
		if !w.reachable(i) {
			return
		}
		w.fence(i)
	}
	// recordQuarantine
	changed := false
	for pod, errant := range plan.Quarantine {
		if len(errant) > 0 && w.state.Quarantine[pod] == "" {
			if w.state.Quarantine == nil {
				w.state.Quarantine = map[string]string{}
			}
			w.state.Quarantine[pod] = mysql.GTIDSet{0: {errant[0].Server: errant[0].Seq}}.String()
			changed = true
		}
	}
	for _, pod := range plan.Unquarantine {
		delete(w.state.Quarantine, pod)
		changed = true
	}
	if changed && !w.saveState() {
		return
	}
	master := w.index(snap.Master)
	if plan.Adopt != "" {
		master = w.index(plan.Adopt)
		w.state.Master, w.state.MasterSource = plan.Adopt, plan.Adopt
		if !w.saveState() {
			return
		}
	}
	if master >= 0 && w.reachable(master) && plan.Bootstrap == "" {
		w.grantLease(master)
	}
	switch {
	case plan.Bootstrap != "":
		master = w.index(plan.Bootstrap)
		w.step()
		if !w.reachable(master) {
			return
		}
		w.servers[master].source, w.servers[master].relay, w.servers[master].io = -1, nil, "No"
		w.state.Master, w.state.MasterSource = plan.Bootstrap, plan.Bootstrap
		if !w.saveState() || !w.openWrites(master, w.semiOnOpen(snap, plan, plan.Bootstrap)) {
			return
		}
	case plan.Promote != "":
		if !w.promote(snap, plan) {
			return
		}
		return
	case plan.OpenWrites:
		if !w.openWrites(master, w.semiOnOpen(snap, plan, snap.Master)) {
			return
		}
	}
	if master < 0 || !w.reachable(master) {
		return
	}
	for _, pod := range plan.Repoint {
		w.step()
		i := w.index(pod)
		if w.reachable(i) {
			w.repoint(i, master)
		}
	}
	for _, pod := range plan.Start {
		w.step()
		if i := w.index(pod); w.reachable(i) {
			w.servers[i].io, w.servers[i].sql = "Connecting", true
		}
	}
	if w.state.Master == w.servers[master].pod {
		switch {
		case plan.EnableSemiSync:
			w.step()
			w.servers[master].semi = true
			w.state.Durable, w.state.SemiSyncFrom = true, w.servers[master].state.Position().String()
			w.saveState()
		case plan.DisableSemiSync:
			w.state.Durable, w.state.SemiSyncFrom = false, ""
			if w.saveState() {
				w.step()
				w.releasePending(master)
			}
		}
	}
	// The heartbeat: a write by replicant's admin (READ ONLY ADMIN), not on a
	// stalled master.
	w.step()
	m := w.servers[master]
	if w.reachable(master) && (!m.semi || w.semiClients(master) > 0) {
		w.write(master, "")
	}
}

func (w *simWorld) releasePending(i int) {
	s := w.servers[i]
	s.semi = false
	for _, p := range s.pending {
		w.ack(p.gtid, p.client)
	}
	s.pending = nil
}

func (w *simWorld) semiOnOpen(snap Snapshot, plan Plan, master string) bool {
	return (&Reconciler{}).semiSyncOnOpen(snap, plan, master)
}

func (w *simWorld) openWrites(i int, semi bool) bool {
	if !w.grantLease(i) {
		return false
	}
	s := w.servers[i]
	if semi {
		w.step()
		if !w.reachable(i) {
			return false
		}
		s.semi = true
		w.state.Durable, w.state.SemiSyncFrom = true, s.state.Position().String()
		if !w.saveState() {
			return false
		}
	} else if w.state.Durable || w.state.SemiSyncFrom != "" {
		w.state.Durable, w.state.SemiSyncFrom = false, ""
		if !w.saveState() {
			return false
		}
	}
	w.step()
	if !w.reachable(i) {
		return false
	}
	s.readOnly = false
	return true
}

func (w *simWorld) repoint(i, master int) {
	s := w.servers[i]
	s.source, s.io, s.sql, s.ioErr, s.lostAt, s.agreed = master, "Connecting", true, 0, -1, 0
}

func (w *simWorld) promote(snap Snapshot, plan Plan) bool {
	old, t := w.index(snap.Master), w.index(plan.Promote)
	w.step()
	if w.reachable(old) {
		w.servers[old].readOnly = true
	}
	w.step()
	if !w.reachable(t) {
		return false
	}
	target := w.servers[t]
	target.io = "No" // STOP SLAVE IO_THREAD; then the relay log is applied
	for _, g := range target.relay {
		target.appendLog(g)
	}
	target.relay = nil
	w.step()
	target.source, target.sql, target.ioErr = -1, false, 0 // RESET SLAVE ALL
	w.state.Master, w.state.MasterSource = target.pod, target.pod
	if !w.saveState() {
		return false
	}
	semi := snap.SemiSync && snap.Replicas > 1 && snap.Durable
	if !w.openWrites(t, semi) {
		return false
	}
	for i := range w.servers {
		if i == old || i == t || !w.reachable(i) || isQuarantined(plan, w.servers[i].pod) {
			continue
		}
		w.step()
		w.repoint(i, t)
	}
	w.state.LastFailover = w.at()
	return w.saveState()
}

func (w *simWorld) apply(a simAction) {
	switch a.Kind {
	case "kill":
		s := w.servers[a.Arg]
		s.alive, s.pending = false, nil
	case "restart":
		s := w.servers[a.Arg]
		if !s.alive {
			// read_only=ON, semi-sync master off, skip_slave_start; a new sidecar
			// process holds no lease.
			s.alive, s.readOnly, s.semi, s.leased = true, true, false, false
			s.io, s.sql, s.lostAt = "No", false, -1
			if s.source >= 0 {
				s.ioErr = 0
			}
		}
	case "cut":
		w.cut[a.Arg], w.rst[a.Arg] = true, false
	case "cutrst":
		w.cut[a.Arg], w.rst[a.Arg] = true, true
	case "heal":
		w.cut[a.Arg] = false
	case "ctrlcut":
		w.ctrlCut[a.Arg] = true
	case "ctrlheal":
		w.ctrlCut[a.Arg] = false
	case "apidown":
		w.apiDown = true
	case "apiup":
		w.apiDown = false
	case "crash":
		w.ctrl.crashAt = a.Arg
	case "statelost":
		if !w.apiDown {
			w.state, w.stateSet = ClusterState{}, false
		}
	case "sidecar":
		w.servers[a.Arg].leased = false
	case "errant":
		// Someone with SUPER writes on a server directly (read_only does not stop
		// them): a transaction no other server has.
		if s := w.servers[a.Arg]; s.alive {
			w.write(a.Arg, "")
			s.pending = nil
		}
	}
}

// check returns the first invariant broken, or "".
func (w *simWorld) check() string {
	writable := -1
	for i, s := range w.servers {
		if !s.alive || s.readOnly {
			continue
		}
		if writable >= 0 {
			return fmt.Sprintf("two writable servers: %s and %s", w.servers[writable].pod, s.pod)
		}
		writable = i
	}
	if writable >= 0 {
		// A binlog only grows: what was verified stays verified.
		s := w.servers[writable]
		for ; s.checked < len(w.ackedList); s.checked++ {
			if g := w.ackedList[s.checked]; !s.has(g) {
				return fmt.Sprintf("write %s acknowledged to client %s is missing on writable %s", g, w.acked[g], s.pod)
			}
		}
	}
	if w.state.Master != "" && w.state.Quarantine[w.state.Master] != "" {
		return fmt.Sprintf("quarantined %s is the master", w.state.Master)
	}
	return ""
}

// run plays a schedule; it returns the broken invariant and the step, or "".
func runSchedule(actions []simAction) (string, int, *simWorld) {
	w := newSimWorld()
	for n, a := range actions {
		prev := w.now
		w.now += a.Dt
		w.apply(a)
		w.sidecars(prev, w.now)
		w.replicate()
		w.clients()
		w.replicate()
		w.sidecars(prev, w.now)
		if a.Kind == "round" {
			w.round()
			w.replicate()
		}
		if v := w.check(); v != "" {
			return v, n, w
		}
	}
	return "", -1, w
}

// schedule makes a random schedule from a seed: mostly controller rounds and time,
// with faults among them.
func schedule(seed uint64) []simAction {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var out []simAction
	// Settle first: a bootstrapped, replicating cluster.
	for i := 0; i < 12; i++ {
		out = append(out, simAction{Kind: "round", Dt: simProbe})
	}
	kinds := []string{"kill", "restart", "cut", "heal", "ctrlcut", "ctrlheal", "apidown", "apiup", "crash", "statelost", "sidecar", "errant", "cutrst"}
	for i := 0; i < simSteps; i++ {
		dt := time.Duration(100+rng.IntN(500)) * time.Millisecond
		if rng.IntN(100) < 78 {
			out = append(out, simAction{Kind: "round", Dt: dt})
			continue
		}
		k := kinds[rng.IntN(len(kinds))]
		arg := rng.IntN(simServers)
		if k == "crash" {
			arg = 1 + rng.IntN(14)
		}
		if k == "statelost" && rng.IntN(4) != 0 {
			k = "wait" // rarer than the others
		}
		out = append(out, simAction{Kind: k, Arg: arg, Dt: dt})
	}
	// Heal everything and let the controller settle: a returning old master must
	// not break anything either.
	for i := 0; i < simServers; i++ {
		out = append(out, simAction{Kind: "heal", Arg: i}, simAction{Kind: "ctrlheal", Arg: i}, simAction{Kind: "restart", Arg: i})
	}
	out = append(out, simAction{Kind: "apiup"})
	for i := 0; i < 15; i++ {
		out = append(out, simAction{Kind: "round", Dt: simProbe})
	}
	return out
}

// shrink removes actions one at a time while the schedule still breaks an invariant.
func shrink(actions []simAction) []simAction {
	for changed := true; changed; {
		changed = false
		for i := 0; i < len(actions); i++ {
			try := append(append([]simAction(nil), actions[:i]...), actions[i+1:]...)
			if v, _, _ := runSchedule(try); v != "" {
				actions, changed = try, true
				i--
			}
		}
	}
	return actions
}

func simSchedules(t *testing.T) (int, uint64) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("REPLICANT_SIM_SCHEDULES")); err == nil && v > 0 {
		n = v
	}
	seed := uint64(time.Now().UnixNano())
	if v, err := strconv.ParseUint(os.Getenv("REPLICANT_SIM_SEED"), 10, 64); err == nil {
		seed = v
	}
	return n, seed
}

// TestSimulatedSchedulesKeepTheInvariants runs many random schedules (100,000 by
// default; `make sim` runs more) against the real Decide.
func TestSimulatedSchedulesKeepTheInvariants(t *testing.T) {
	n, base := simSchedules(t)
	start := time.Now()
	var failed atomic.Bool
	var firstMu sync.Mutex
	var first struct {
		seed    uint64
		problem string
	}
	var ran atomic.Int64
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	for wk := 0; wk < workers; wk++ {
		wg.Add(1)
		go func(wk int) {
			defer wg.Done()
			for i := wk; i < n && !failed.Load(); i += workers {
				seed := base + uint64(i)
				if v, _, _ := runSchedule(schedule(seed)); v != "" {
					firstMu.Lock()
					if !failed.Load() {
						first.seed, first.problem = seed, v
						failed.Store(true)
					}
					firstMu.Unlock()
					return
				}
				ran.Add(1)
			}
		}(wk)
	}
	wg.Wait()
	if failed.Load() {
		minimal := shrink(schedule(first.seed))
		v, at, w := runSchedule(minimal)
		var lines []string
		for i, a := range minimal {
			lines = append(lines, fmt.Sprintf("  %2d %s", i, a))
		}
		t.Fatalf("seed %d (REPLICANT_SIM_SEED=%d REPLICANT_SIM_SCHEDULES=1 to replay): %s\nminimal schedule (%d actions), broken at step %d: %s\n%s\ncontroller: %s",
			first.seed, first.seed, first.problem, len(minimal), at, v, strings.Join(lines, "\n"), strings.Join(w.trace, "; "))
	}
	t.Logf("%d schedules of %d steps from seed %d in %v: invariants held", ran.Load(), simSteps+12+3*simServers+16, base, time.Since(start).Round(time.Millisecond))
}
