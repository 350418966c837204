package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
)

// Event reasons.
const (
	EventBootstrapped        = "Bootstrapped"
	EventAdopted             = "MasterReconstructed"
	EventFailover            = "Failover"
	EventFailoverFailed      = "FailoverFailed"
	EventFailoverRefused     = "FailoverRefused"
	EventFailoverHeld        = "FailoverHeld"
	EventTakeover            = "Takeover"
	EventTakeoverRefused     = "TakeoverRefused"
	EventResetReplica        = "ResetReplica"
	EventReplicating         = "Replicating"
	EventErrant              = "ErrantTransactions"
	EventRejoined            = "Rejoined"
	EventWritesStalled       = "WritesStalled"
	EventWritesResumed       = "WritesResumed"
	EventSemiSync            = "SemiSync"
	EventObjectConflict      = "ObjectConflict"
	EventLeaseUnsupported    = "WriteLeaseUnsupported"
	EventLeaseRenewalFailed  = "WriteLeaseRenewalFailed"
	EventDurabilityLocalOnly = "DurabilityLocalOnly"
	EventRollingUpdate       = "RollingUpdate"
	EventRolloutStalled      = "RolloutStalled"
)

// act carries out the plan, in a fixed order, and stops at the first step that fails
// where going on could make two writers: fence; record what the state must know
// (adopted master, quarantine); renew the master's write lease; bootstrap, promote or
// open writes; requests; repoint and start replicas; semi-sync; heartbeat.
func (r *Reconciler) act(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, snap Snapshot, plan Plan, creds Credentials, opts inject.Options) error {
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	var errs []error
	for _, pod := range plan.Fence {
		srv := snap.server(pod)
		if _, err := sidecar.Fence(ctx, r.pool(srv.Addr, srv.Login)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // never open or move writes while a stray writer may remain
	}
	// Only after fencing: switching the master side off releases commits still
	// waiting on the server, and a fenced server's client sessions were killed.
	semiSyncStillOn := map[string]bool{}
	for _, pod := range plan.SemiSyncOff {
		srv := snap.server(pod)
		if err := r.pool(srv.Addr, srv.Login).SetSemiSyncMaster(ctx, false); err != nil {
			errs = append(errs, err)
			semiSyncStillOn[pod] = true
		}
	}
	if err := r.recordQuarantine(ctx, sts, st, plan); err != nil {
		return err
	}
	master := snap.server(snap.Master)
	if plan.Adopt != "" {
		master = snap.server(plan.Adopt)
		if err := r.recordMaster(ctx, sts, st, *master); err != nil {
			return err
		}
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventAdopted, "%s is the master (%s)", master.Pod, strings.Join(plan.Reasons, "; "))
	}
	if master != nil && master.Reachable && plan.Bootstrap == "" {
		if err := r.grantLease(ctx, key, *master, creds); err != nil && !errors.Is(err, errLeaseUnsupported) {
			r.warnOnce(sts, EventLeaseRenewalFailed, fmt.Sprintf("renewing master %s's write lease: %v (it fences itself when the lease runs out)", master.Pod, err))
			// A sidecar that cannot hold the lease could not fence its server either:
			// the controller does, before half the lease is gone, so that no master
			// is writable without a lease that protects the next failover.
			r.mu.Lock()
			g := r.mem(key).lease
			r.mu.Unlock()
			if !master.State.ReadOnly && (g.pod != master.Pod || time.Since(g.at) > r.Options.WriteLease/2) {
				if _, ferr := sidecar.Fence(ctx, r.pool(master.Addr, master.Login)); ferr != nil {
					return fmt.Errorf("master %s holds no write lease and could not be fenced: %w", master.Pod, ferr)
				}
				return fmt.Errorf("master %s fenced: its sidecar holds no write lease (%v); writes reopen once it does", master.Pod, err)
			}
		}
	}
	switch {
	case plan.Forced != nil:
		return r.forcedFailover(ctx, sts, st, snap, plan, creds)
	case plan.Refused[RequestFailoverTo] != "":
		return r.refuse(ctx, sts, OpForcedFailover, snap.Master, *snap.FailoverTo, plan.Refused[RequestFailoverTo], EventFailoverRefused, inject.AnnFailoverTo)
	}
	switch {
	case plan.Bootstrap != "":
		master = snap.server(plan.Bootstrap)
		if err := r.bootstrap(ctx, sts, st, *master, snap, plan, creds, opts); err != nil {
			return err
		}
	case plan.Promote != "":
		promoted, err := r.promote(ctx, sts, st, snap, plan, plan.Promote, OpFailover, creds)
		if err != nil {
			return err
		}
		master = promoted
	case plan.OpenWrites:
		if err := r.openWrites(ctx, sts, st, *master, semiSyncOnOpen(snap, plan, master.Pod), creds); err != nil {
			return err
		}
	case plan.Held != "":
		r.warnOnce(sts, EventFailoverHeld, plan.Held)
	}
	if plan.Held == "" {
		r.warningEnded(sts, EventFailoverHeld)
	}
	if master == nil || !master.Reachable {
		return nil
	}
	if plan.Promote != "" {
		return nil // repointed already, the rest follows on the next probe
	}
	if plan.Handoff != "" {
		newMaster, err := r.takeover(ctx, sts, st, snap, plan, *snap.server(plan.Handoff), creds, "its pod is terminating")
		if err != nil || newMaster == nil {
			return err // a failed takeover was rolled back: the next probe tries again
		}
		master = newMaster
	} else if plan.Refused[RequestTakeoverTo] != "" {
		return r.refuse(ctx, sts, OpTakeover, snap.Master, *snap.TakeoverTo, plan.Refused[RequestTakeoverTo], EventTakeoverRefused, inject.AnnTakeoverTo)
	} else if plan.Takeover != "" {
		newMaster, err := r.takeover(ctx, sts, st, snap, plan, *snap.server(plan.Takeover), creds, "requested")
		if err != nil || newMaster == nil {
			return err
		}
		master = newMaster
	} else if plan.RollHandoff != "" {
		newMaster, err := r.takeover(ctx, sts, st, snap, plan, *snap.server(plan.RollHandoff), creds,
			"rolling update: the replicas run revision "+snap.UpdateRevision+", the master is rolled last")
		if err != nil || newMaster == nil {
			return err
		}
		return nil // the old master is a replica now: the next round rolls it
	}
	if plan.Roll != "" {
		return r.roll(ctx, sts, *snap.server(plan.Roll), snap.UpdateRevision)
	}
	if plan.RolloutStalled != "" {
		r.warnOnce(sts, EventRolloutStalled, plan.RolloutStalled)
	}
	for _, pod := range plan.Reset {
		if err := r.resetReplica(ctx, sts, *snap.server(pod), ""); err != nil {
			errs = append(errs, err)
		}
	}
	for key, why := range plan.Refused {
		if pod, ok := strings.CutPrefix(key, RequestResetReplica+"/"); ok {
			if err := r.resetReplica(ctx, sts, *snap.server(pod), why); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, pod := range plan.Repoint {
		if semiSyncStillOn[pod] {
			continue
		}
		if err := r.repoint(ctx, *snap.server(pod), *master, creds); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventReplicating, "%s replicates from %s", pod, master.Pod)
	}
	for _, pod := range plan.Start {
		if semiSyncStillOn[pod] {
			continue
		}
		if err := r.pool(snap.server(pod).Addr, snap.server(pod).Login).StartReplica(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventReplicating, "%s replicates from %s again", pod, master.Pod)
	}
	if plan.ClearPromoting && st.Promoting != "" {
		st.Promoting = ""
		if err := saveState(ctx, r.Client, sts, st); err != nil {
			errs = append(errs, err)
		}
	}
	for pod, errant := range plan.Quarantine {
		r.warnOnce(sts, EventErrant+"/"+pod, fmt.Sprintf(
			"%s holds transactions %v that master %s never had: kept read-only and out of the Services; resolve by hand (re-clone, or replay them on the master)",
			pod, errant, master.Pod))
	}
	if master.Pod == snap.Master && snap.Master != "" {
		switch {
		case plan.EnableSemiSync:
			if err := r.enableSemiSync(ctx, sts, st, *master); err != nil {
				errs = append(errs, err)
			}
		case plan.DisableSemiSync:
			if err := r.disableSemiSync(ctx, sts, st, *master); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// A commit that waits for a replica no one is there to give would hold the
	// controller too: no heartbeat on a stalled master.
	if ss := master.State.SemiSync; master.Pod != snap.Master || !ss.MasterEnabled || ss.MasterClients > 0 {
		if err := r.pool(master.Addr, creds.Admin).WriteHeartbeat(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// recordMaster makes pod the master in the state (optimistic concurrency: a stale
// leader's write fails here, before it opens anything), then mirrors it on the
// StatefulSet for people and the CLI (best effort).
func (r *Reconciler) recordMaster(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, master Server) error {
	st.Master, st.MasterSource, st.Promoting = master.Pod, master.SourceHost, ""
	if err := saveState(ctx, r.Client, sts, st); err != nil {
		return err
	}
	if err := r.annotate(ctx, sts, master.Pod, nil); err != nil {
		log.FromContext(ctx).Info("mirroring the master on the StatefulSet failed (the state has it)", "error", err.Error())
	}
	return nil
}

// recordQuarantine adds newly found errant servers to the state and removes those that
// no longer hold any.
func (r *Reconciler) recordQuarantine(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, plan Plan) error {
	changed := false
	for pod, errant := range plan.Quarantine {
		if errant.Empty() || st.Quarantine[pod] != "" {
			continue
		}
		if st.Quarantine == nil {
			st.Quarantine = map[string]string{}
		}
		st.Quarantine[pod] = errant.String()
		changed = true
	}
	for _, pod := range plan.Unquarantine {
		delete(st.Quarantine, pod)
		changed = true
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventRejoined, "%s no longer holds errant transactions: it rejoins", pod)
	}
	if !changed {
		return nil
	}
	return saveState(ctx, r.Client, sts, st)
}

var errLeaseUnsupported = errors.New("the sidecar has no write lease endpoint (a replicant release before self-fencing)")

// grantLease grants or renews srv's write lease through its sidecar. The grant counts
// from the moment the answer arrived, after the sidecar started counting.
func (r *Reconciler) grantLease(ctx context.Context, key types.NamespacedName, srv Server, creds Credentials) error {
	host, _, err := net.SplitHostPort(srv.Addr)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(sidecar.LeaseRequest{TTLMillis: r.Options.WriteLease.Milliseconds()})
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(inject.SidecarPort)) + sidecar.LeasePath
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(creds.Backup.Name, creds.Backup.Password)
	resp, err := r.sidecars.Do(req)
	if err != nil {
		return fmt.Errorf("write lease for %s: %w", srv.Pod, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK:
		r.mu.Lock()
		r.mem(key).lease = leaseGrant{pod: srv.Pod, at: time.Now()}
		r.mu.Unlock()
		return nil
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return errLeaseUnsupported
	}
	return fmt.Errorf("write lease for %s: sidecar answered %s: %s", srv.Pod, resp.Status, strings.TrimSpace(string(msg)))
}

// semiSyncOnOpen says whether a master opened now must make commits wait for a
// replica: with durability semi-sync, more than one server, and a replica that can
// acknowledge (or commits already waited before: then they go on waiting, rather
// than a failover losing what a lone master acknowledged).
func semiSyncOnOpen(snap Snapshot, plan Plan, master string) bool {
	if !snap.SemiSync || snap.Replicas <= 1 {
		return false
	}
	if snap.Durable {
		return true
	}
	for pod, healthy := range plan.Healthy {
		if healthy && pod != master {
			return true
		}
	}
	return false
}

// openWrites opens writes on the master: its write lease first (no lease, no
// writes: an isolated master could not fence itself), then semi-sync when asked
// (recording the position from which commits wait), then read_only off. The master
// is recorded before, so a controller that stops in between leaves a read-only
// master, which the next round opens.
func (r *Reconciler) openWrites(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, master Server, semiSync bool, creds Credentials) error {
	key := types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}
	if err := r.grantLease(ctx, key, master, creds); err != nil {
		if !errors.Is(err, errLeaseUnsupported) {
			return fmt.Errorf("not opening writes on %s without a write lease: %w", master.Pod, err)
		}
		r.warnOnce(sts, EventLeaseUnsupported, fmt.Sprintf("%s: %v: it cannot fence itself if it is cut off; re-apply the StatefulSet to update its pods", master.Pod, err))
	}
	conn := r.pool(master.Addr, master.Login)
	if semiSync {
		if err := r.enableSemiSync(ctx, sts, st, master); err != nil {
			return err
		}
	} else if st.Durable || st.SemiSyncFrom != "" {
		st.Durable, st.SemiSyncFrom = false, ""
		if err := saveState(ctx, r.Client, sts, st); err != nil {
			return err
		}
	}
	if !semiSync && desiredReplicas(sts) <= 1 {
		r.warnLocalOnly(sts, master.Pod)
	}
	return conn.SetReadOnly(ctx, false)
}

// enableSemiSync makes the master's commits wait for a replica, then records the
// master's position: every commit acknowledged after it is on a replica.
func (r *Reconciler) enableSemiSync(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, master Server) error {
	conn := r.pool(master.Addr, master.Login)
	if err := conn.SetSemiSyncMaster(ctx, true); err != nil {
		return err
	}
	state, err := conn.State(ctx)
	if err != nil {
		return err
	}
	st.Durable, st.SemiSyncFrom = true, state.BinlogState.Position().String()
	if err := saveState(ctx, r.Client, sts, st); err != nil {
		return err
	}
	r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventSemiSync, "commits on master %s wait for a replica's acknowledgement from %s on", master.Pod, st.SemiSyncFrom)
	return nil
}

// disableSemiSync stops the master's commits waiting (a single-server cluster).
func (r *Reconciler) disableSemiSync(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, master Server) error {
	st.Durable, st.SemiSyncFrom = false, ""
	if err := saveState(ctx, r.Client, sts, st); err != nil {
		return err
	}
	if err := r.pool(master.Addr, master.Login).SetSemiSyncMaster(ctx, false); err != nil {
		return err
	}
	r.warnLocalOnly(sts, master.Pod)
	return nil
}

func (r *Reconciler) warnLocalOnly(sts *appsv1.StatefulSet, master string) {
	r.warnOnce(sts, EventDurabilityLocalOnly, fmt.Sprintf("%s is the only server: commits are durable on its own disk only (no replica acknowledges them)", master))
}

// bootstrap makes the first master: replicant's users (created as root, written to
// the binlog so every replica gets them), no replica settings, recorded as master,
// then writes opened.
func (r *Reconciler) bootstrap(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, master Server, snap Snapshot, plan Plan, creds Credentials, opts inject.Options) error {
	root, err := rootPassword(ctx, r.Client, sts, opts.Container)
	if err != nil {
		return err
	}
	if err := r.pool(master.Addr, mysql.User{Name: "root", Password: root}).EnsureUsers(ctx, creds.Users()); err != nil {
		return err
	}
	if err := r.pool(master.Addr, creds.Admin).ResetReplica(ctx); err != nil {
		return err
	}
	if err := r.recordMaster(ctx, sts, st, master); err != nil {
		return err
	}
	master.Login = creds.Admin
	if err := r.openWrites(ctx, sts, st, master, semiSyncOnOpen(snap, plan, master.Pod), creds); err != nil {
		return err
	}
	r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventBootstrapped, "%s is the master; writes are open (%s)", master.Pod, strings.Join(plan.Reasons, "; "))
	return nil
}

// promote fails over to pod: the old master is fenced if it can be reached at all
// (its write lease has run out anyway: Decide waits for that), the candidate applies
// everything it received, forgets its replica settings, is recorded as master, and
// only then takes writes; the other replicas follow it at once. A failure on the way
// leaves every server read-only; the next probe decides again.
func (r *Reconciler) promote(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, snap Snapshot, plan Plan, pod, opName string, creds Credentials, done ...string) (*Server, error) {
	start := time.Now()
	old := snap.server(snap.Master)
	target := snap.server(pod)
	fail := func(err error) (*Server, error) {
		op := Operation{Op: opName, From: old.Pod, Target: target.Pod, Result: ResultFailed, Message: err.Error(), Start: start, End: time.Now()}
		_ = r.annotate(ctx, sts, "", &op, done...)
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, EventFailoverFailed, "promoting %s: %v; every server stays read-only", target.Pod, err)
		return nil, err
	}
	if old.Addr != "" {
		_ = r.pool(old.Addr, old.Login).SetReadOnly(ctx, true) // best effort: it is down for the controller
	}
	// Recorded before its IO thread stops: if this promotion fails or the controller
	// dies before the end, the next round starts it again should the old master
	// come back.
	if st.Promoting != target.Pod {
		st.Promoting = target.Pod
		if err := saveState(ctx, r.Client, sts, st); err != nil {
			return fail(err)
		}
	}
	conn := r.pool(target.Addr, target.Login)
	if err := conn.StopReplicaIO(ctx); err != nil {
		return fail(err)
	}
	state, err := conn.State(ctx)
	if err != nil {
		return fail(err)
	}
	want := received(Server{State: state})
	if err := conn.WaitForGTID(ctx, want, r.Options.ApplyTimeout); err != nil {
		return fail(fmt.Errorf("applying its relay log up to %s: %w", want, err))
	}
	applied := time.Since(start)
	if err := conn.ResetReplica(ctx); err != nil {
		return fail(err)
	}
	if err := r.recordMaster(ctx, sts, st, *target); err != nil {
		return fail(err)
	}
	// Commits go on waiting for a replica if they did (an automatic failover with
	// semi-sync happens only then: Decide).
	semiSync := snap.SemiSync && snap.Replicas > 1 && snap.Durable
	if err := r.openWrites(ctx, sts, st, *target, semiSync, creds); err != nil {
		return fail(err)
	}
	end := time.Now()
	// The others follow the new master right away: with semi-sync its commits wait
	// for one of them.
	for _, srv := range snap.Servers {
		if srv.Pod == old.Pod || srv.Pod == target.Pod || !srv.Reachable || srv.Detached || isQuarantined(plan, srv.Pod) {
			continue
		}
		_ = r.repoint(ctx, srv, *target, creds) // retried on the next probe
	}
	why := "master " + old.Pod + " down"
	if opName == OpForcedFailover {
		why = "failover requested from " + old.Pod
	}
	op := Operation{Op: opName, From: old.Pod, Target: target.Pod, Result: ResultOK, Start: start, End: end,
		Message: fmt.Sprintf("%s; %s promoted at %s (relay log applied in %d ms, writable after %d ms)",
			why, target.Pod, want, applied.Milliseconds(), end.Sub(start).Milliseconds())}
	if opName == OpFailover {
		st.LastFailover = end
		if err := saveState(ctx, r.Client, sts, st); err != nil {
			return nil, err
		}
	}
	if err := r.annotate(ctx, sts, "", &op, done...); err != nil {
		log.FromContext(ctx).Info("reporting the failover on the StatefulSet failed", "error", err.Error())
	}
	r.Recorder.Event(sts, corev1.EventTypeNormal, EventFailover, op.Message)
	return target, nil
}

// refuse reports a refused request (Event, last-operation) and removes it.
func (r *Reconciler) refuse(ctx context.Context, sts *appsv1.StatefulSet, opName, from, target, why, reason, request string) error {
	now := time.Now()
	op := Operation{Op: opName, From: from, Target: target, Result: ResultRefused, Message: why, Start: now, End: now}
	what := map[string]string{OpForcedFailover: "failover", OpTakeover: "takeover"}[opName]
	r.Recorder.Eventf(sts, corev1.EventTypeWarning, reason, "%s to %s refused: %s", what, target, why)
	return r.annotate(ctx, sts, "", &op, request)
}

// forcedFailover carries out plan.Forced: the old master is fenced first when it can
// be reached (if that fails, nothing is done); when it cannot, its write lease must
// have run out first (Decide says so: the request waits). Then the target is promoted
// as in an automatic failover, without the proofs an automatic one needs: a human
// asked.
func (r *Reconciler) forcedFailover(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, snap Snapshot, plan Plan, creds Credentials) error {
	f := plan.Forced
	if f.WaitLease {
		log.FromContext(ctx).Info("failover-to waits for the old master's write lease to run out", "cluster", sts.Name,
			"wait", snap.WritesSafeAt.Sub(snap.Now).String())
		return nil // the request stays; a later round goes on
	}
	if old := snap.server(snap.Master); old.Reachable {
		oldConn := r.pool(old.Addr, old.Login)
		if _, err := sidecar.Fence(ctx, oldConn); err != nil {
			return r.refuse(ctx, sts, OpForcedFailover, snap.Master, f.Request,
				fmt.Sprintf("could not make master %s read-only first: %v", old.Pod, err), EventFailoverRefused, inject.AnnFailoverTo)
		}
		if state, err := oldConn.State(ctx); err == nil {
			// Give the target a moment to receive what the fenced master wrote;
			// forced means go on anyway (what it misses shows as errant).
			t := snap.server(f.Target)
			_ = r.pool(t.Addr, t.Login).WaitForGTID(ctx, state.BinlogState, 5*time.Second)
		}
	}
	_, err := r.promote(ctx, sts, st, snap, plan, f.Target, OpForcedFailover, creds, inject.AnnFailoverTo)
	return err
}

// resetReplica carries out (refused == "") or refuses a reset-replica request on a
// pod: the replica stops and forgets its source (RESET SLAVE ALL), stays read-only,
// and is marked detached so that the controller does not repoint it; removing the
// detached annotation lets it rejoin (or be quarantined, if it was written to
// meanwhile).
func (r *Reconciler) resetReplica(ctx context.Context, sts *appsv1.StatefulSet, srv Server, refused string) error {
	start := time.Now()
	op := Operation{Op: OpResetReplica, Target: srv.Pod, Start: start, Result: ResultRefused, Message: refused}
	if refused == "" {
		op.Result = ResultOK
		op.Message = srv.Pod + " no longer replicates; it stays read-only and detached until its " + inject.AnnDetached + " annotation is removed"
		if err := r.pool(srv.Addr, srv.Login).ResetReplica(ctx); err != nil {
			op.Result, op.Message = ResultFailed, err.Error()
		}
	}
	op.End = time.Now()
	pod := &corev1.Pod{}
	if gerr := r.Client.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: srv.Pod}, pod); gerr != nil {
		return gerr
	}
	patch := client.MergeFrom(pod.DeepCopy())
	delete(pod.Annotations, inject.AnnResetReplica)
	if op.Result == ResultOK {
		pod.Annotations[inject.AnnDetached] = "true"
	}
	if perr := r.Client.Patch(ctx, pod, patch); perr != nil {
		return perr
	}
	kind := corev1.EventTypeNormal
	if op.Result != ResultOK {
		kind = corev1.EventTypeWarning
	}
	r.Recorder.Event(sts, kind, EventResetReplica, op.Message)
	return r.annotate(ctx, sts, "", &op)
}

// takeover hands the master role to target gracefully: the old master stops taking
// writes, target applies everything it wrote, target takes writes, and the old
// master replicates from it at once (it is not left outside the cluster). If target
// cannot catch up in time, the old master takes writes again and nothing changed.
func (r *Reconciler) takeover(ctx context.Context, sts *appsv1.StatefulSet, st *storedState, snap Snapshot, plan Plan, target Server, creds Credentials, why string) (*Server, error) {
	old := *snap.server(snap.Master)
	start := time.Now()
	finish := func(result, message string, blocked time.Duration) error {
		op := Operation{Op: OpTakeover, From: old.Pod, Target: target.Pod, Result: result, Message: message,
			Start: start, End: time.Now(), WritesBlockedMs: blocked.Milliseconds()}
		kind := corev1.EventTypeNormal
		if result != ResultOK {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Event(sts, kind, EventTakeover, message)
		return r.annotate(ctx, sts, "", &op, inject.AnnTakeoverTo)
	}
	oldConn := r.pool(old.Addr, old.Login)
	targetConn := r.pool(target.Addr, target.Login)
	if err := oldConn.SetReadOnly(ctx, true); err != nil {
		return nil, finish(ResultFailed, fmt.Sprintf("could not stop writes on %s: %v; nothing changed", old.Pod, err), 0)
	}
	blockedFrom := time.Now()
	rollback := func(cause error) (*Server, error) {
		if err := oldConn.SetReadOnly(ctx, false); err != nil {
			cause = fmt.Errorf("%v; and reopening writes on %s failed: %v (it stays read-only; the next probe reopens it)", cause, old.Pod, err)
		}
		return nil, finish(ResultFailed, fmt.Sprintf("takeover to %s failed: %v; %s is master again", target.Pod, cause, old.Pod), time.Since(blockedFrom))
	}
	state, err := oldConn.State(ctx)
	if err != nil {
		return rollback(err)
	}
	if err := targetConn.WaitForGTID(ctx, state.BinlogState, r.Options.ApplyTimeout); err != nil {
		return rollback(err)
	}
	if err := targetConn.ResetReplica(ctx); err != nil {
		return rollback(err)
	}
	if err := r.recordMaster(ctx, sts, st, target); err != nil {
		return rollback(err)
	}
	if err := r.openWrites(ctx, sts, st, target, semiSyncOnOpen(snap, plan, target.Pod), creds); err != nil {
		// target is recorded as master but read-only: the next probe opens it
		// (Plan.OpenWrites). The old master stays fenced: never two writers.
		return nil, finish(ResultFailed, fmt.Sprintf("%s is master but opening writes failed: %v", target.Pod, err), time.Since(blockedFrom))
	}
	blocked := time.Since(blockedFrom)
	newMaster := target
	// The old master and the other replicas follow the new master right away.
	_ = oldConn.SetSemiSyncMaster(ctx, false)
	old.State = state
	old.State.Replica = nil // it was a master: it starts from its own position
	var errs []error
	if err := r.repoint(ctx, old, newMaster, creds); err != nil {
		errs = append(errs, err)
	}
	for _, srv := range snap.Servers {
		if srv.Pod != old.Pod && srv.Pod != target.Pod && srv.Reachable && pointsAt(srv, old) {
			if err := r.repoint(ctx, srv, newMaster, creds); err != nil {
				errs = append(errs, err)
			}
		}
	}
	msg := fmt.Sprintf("%s is master (was %s, %s); writes blocked %d ms; %s replicates from it", target.Pod, old.Pod, why, blocked.Milliseconds(), old.Pod)
	if len(errs) > 0 {
		msg += fmt.Sprintf("; repointing failed, retried on the next probe: %v", errors.Join(errs...))
	}
	if err := finish(ResultOK, msg, blocked); err != nil {
		log.FromContext(ctx).Info("reporting the takeover on the StatefulSet failed", "error", err.Error())
	}
	return &newMaster, nil
}

// roll deletes a pod that runs an old revision, so that the StatefulSet controller
// creates it again at the update revision (the StatefulSet's updateStrategy is
// OnDelete). The UID precondition deletes exactly the pod decided on.
func (r *Reconciler) roll(ctx context.Context, sts *appsv1.StatefulSet, srv Server, revision string) error {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: sts.Namespace, Name: srv.Pod}}
	uid := types.UID(srv.UID)
	if err := r.Client.Delete(ctx, pod, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("rolling update: delete pod %s: %w", srv.Pod, err)
	}
	// Until the cache shows the deletion, the next rounds see this pod as going
	// (observe): a cache a step behind never lets a second pod go.
	r.mu.Lock()
	r.mem(types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}).rolled = srv.UID
	r.mu.Unlock()
	r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventRollingUpdate, "%s deleted to run revision %s (was %s): replicas one at a time, the master last after a hand-over",
		srv.Pod, revision, srv.Revision)
	return nil
}

// repoint makes srv replicate from master by GTID. A server that was never a replica
// starts from the position its clone ended at, or from its own data (an old master
// whose transactions the new master all has).
func (r *Reconciler) repoint(ctx context.Context, srv, master Server, creds Credentials) error {
	conn := r.pool(srv.Addr, srv.Login)
	if err := conn.StopReplica(ctx); err != nil {
		return err
	}
	if srv.State.Replica == nil {
		pos := srv.State.CurrentPos
		if !srv.State.BinlogState.Empty() {
			pos = srv.State.BinlogState.Position() // what it holds, whoever wrote it
		}
		if srv.CloneGTID != "" && srv.State.BinlogState.Empty() {
			parsed, err := mysql.ParseGTIDSet(srv.CloneGTID)
			if err != nil {
				return fmt.Errorf("%s: clone position: %w", srv.Pod, err)
			}
			pos = parsed
		}
		if err := conn.SetReplicaPos(ctx, pos); err != nil {
			return err
		}
	}
	if err := conn.ChangeSource(ctx, mysql.Source{Host: master.SourceHost, Port: 3306,
		User: creds.Replication.Name, Password: creds.Replication.Password}); err != nil {
		return err
	}
	return conn.StartReplica(ctx)
}
