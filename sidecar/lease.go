package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

// The write lease: self-fencing of an isolated master.
//
// The controller opens writes on a server only after its sidecar accepted a lease,
// and renews it every probe. When renewals stop (the controller lost its path to this
// pod, the pod's node is cut off, the controller is down) the lease runs out and the
// sidecar fences its own server: client sessions are killed (a commit waiting for a
// semi-sync acknowledgement returns an error to its client, never success) and
// read_only is switched on. The controller counts the same lease from the moment a
// renewal's answer arrived, which is after the sidecar counted it, and adds a margin:
// it never opens writes elsewhere before this server has fenced itself.

// LeasePath is the sidecar's lease endpoint (PUT, basic auth with the backup account).
const LeasePath = "/lease"

// LeaseRequest grants or renews the lease for TTL from the moment it arrives.
type LeaseRequest struct {
	TTLMillis int64 `json:"ttlMillis"`
}

// leaseKeeper holds the lease deadline on the monotonic clock and fences the server
// when it has passed.
type leaseKeeper struct {
	mu       sync.Mutex
	deadline time.Time // zero: never granted since the sidecar started
	fenced   bool      // this sidecar fenced the server since the lease ran out
}

func (l *leaseKeeper) grant(ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadline = time.Now().Add(ttl)
	l.fenced = false
}

// expired reports whether no lease is held now, and since when it ran out.
func (l *leaseKeeper) expired(now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.deadline.IsZero() {
		return true, 0
	}
	return !now.Before(l.deadline), now.Sub(l.deadline)
}

func (s *Server) lease(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="replicant"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	var req LeaseRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil || req.TTLMillis <= 0 || req.TTLMillis > 60_000 {
		http.Error(w, "body must be {\"ttlMillis\": 1..60000}", http.StatusBadRequest)
		return
	}
	if s.admin == nil {
		// Without the admin account this sidecar cannot fence: refuse, so that the
		// controller does not count on it.
		http.Error(w, "no admin account (REPLICANT_ADMIN_USER): this sidecar cannot fence its server", http.StatusServiceUnavailable)
		return
	}
	s.leases.grant(time.Duration(req.TTLMillis) * time.Millisecond)
	w.WriteHeader(http.StatusNoContent)
}

// keepFenced fences the local server whenever it is writable without a lease, until
// ctx ends. It checks every interval.
func (s *Server) keepFenced(ctx context.Context, interval time.Duration) {
	if s.admin == nil {
		return
	}
	log := s.cfg.Log.WithName("lease")
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		expired, since := s.leases.expired(time.Now())
		if !expired {
			continue
		}
		readOnly, err := s.admin.ReadOnly(ctx)
		if err != nil || readOnly {
			continue // not answering (nothing to fence) or fenced already
		}
		killed, err := Fence(ctx, s.admin)
		if err != nil {
			log.Error(err, "fencing the server: its write lease ran out", "expiredFor", since.String())
			// A session opened before replicant's GRANTs reached this server lacks
			// their privileges for good: log in again.
			s.admin.ForgetSessions()
			continue
		}
		s.leases.mu.Lock()
		first := !s.leases.fenced
		s.leases.fenced = true
		s.leases.mu.Unlock()
		if first {
			log.Info("write lease ran out: server fenced (read-only, client sessions killed)",
				"expiredFor", since.String(), "sessionsKilled", killed)
		}
	}
}

// Fence makes a server read-only at once, whatever its clients are doing: client
// sessions are killed first, since SET GLOBAL read_only waits for commits in
// progress, and a commit waiting for a semi-sync acknowledgement waits as long as
// rpl_semi_sync_master_timeout. It returns how many sessions were killed.
func Fence(ctx context.Context, db *mysql.Server) (int, error) {
	total := 0
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		// A session it could not end does not stop the fence: read_only still
		// binds every new write, and a commit that session had waiting holds the
		// SET for at most a second.
		killed, killErr := db.KillClientSessions(ctx)
		total += killed
		// Where killed sessions go on waiting for their acknowledgement (MySQL), the
		// flavor lets their commits through first, telling no client.
		if err := db.ReleaseWaitingCommits(ctx); err != nil && killErr == nil {
			killErr = err
		}
		setCtx, cancel := context.WithTimeout(ctx, time.Second)
		err := db.SetReadOnly(setCtx, true)
		cancel()
		if err == nil {
			return total, nil
		}
		if killErr != nil {
			lastErr = killErr
		} else {
			lastErr = err
		}
	}
	return total, fmt.Errorf("read_only still off after killing client sessions 5 times: %w", lastErr)
}
