package e2e_test

import (
	"context"
	dbsql "database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

// podNetnsPid is a host pid in the pod's network namespace (its sandbox's), from
// containerd: it answers while the kube-apiserver is down.
func podNetnsPid(namespace, pod string) (int, error) {
	out, err := exec.Command(filepath.Join(root, "test", "cluster", "cluster.sh"), "pid", namespace, pod).Output()
	if err != nil {
		return 0, fmt.Errorf("the network namespace of %s/%s: %w", namespace, pod, err)
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}

// dialInNetns opens a TCP connection from inside the network namespace of pid. A
// socket stays in the namespace it was made in, so the connection is then used from
// any goroutine; the thread that entered the namespace is never reused (it ends with
// its goroutine, locked).
func dialInNetns(ctx context.Context, pid int, addr string) (net.Conn, error) {
	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- result{err: fmt.Errorf("entering the network namespace of pid %d: %w", pid, err)}
			return
		}
		conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

var registerPodDialers sync.Once

// podDB is a connection pool to pod's server over the loopback of the pod's network
// namespace, entered from the node: it works inside any partition of the pod and
// needs no apiserver. The namespace is looked up again when a dial fails (the pod
// may have been re-created).
func podDB(pod, user, password string) *dbsql.DB {
	GinkgoHelper()
	registerPodDialers.Do(func() {
		var mu sync.Mutex
		pids := map[string]int{}
		gomysql.RegisterDialContext("pod", func(ctx context.Context, addr string) (net.Conn, error) {
			// addr is "pod:port"; the server is on the pod's own loopback.
			name, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			pid, ok := pids[name]
			mu.Unlock()
			if !ok {
				if pid, err = podNetnsPid(ns, name); err != nil {
					return nil, err
				}
			}
			conn, err := dialInNetns(ctx, pid, net.JoinHostPort("127.0.0.1", port))
			mu.Lock()
			if err != nil {
				delete(pids, name)
			} else {
				pids[name] = pid
			}
			mu.Unlock()
			return conn, err
		})
	})
	db, err := dbsql.Open("mysql", fmt.Sprintf("%s:%s@pod(%s:3306)/?timeout=1s&readTimeout=1s&writeTimeout=1s", user, password, pod))
	Expect(err).NotTo(HaveOccurred())
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	DeferCleanup(db.Close)
	return db
}

// readOnlyChecker polls @@read_only on every server every 50 ms, each over one kept
// connection on its pod's loopback (podDB), for a while, stamped with the node's
// clock (one node: one clock).
type readOnlyChecker struct {
	mu        sync.Mutex
	timelines map[string][]sample
	done      chan struct{}
}

func startReadOnlyChecker(seconds int) *readOnlyChecker {
	c := &readOnlyChecker{timelines: map[string][]sample{}, done: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second)
	var wg sync.WaitGroup
	for _, p := range dbPods() {
		db := podDB(p.Name, "app", appPass)
		wg.Add(1)
		go func(pod string) {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				qctx, qcancel := context.WithTimeout(ctx, time.Second)
				var ro int
				err := db.QueryRowContext(qctx, "SELECT @@read_only").Scan(&ro)
				qcancel()
				if ctx.Err() != nil {
					return
				}
				c.mu.Lock()
				c.timelines[pod] = append(c.timelines[pod], sample{at: time.Now().UnixMilli(), writable: err == nil && ro == 0, answered: err == nil})
				c.mu.Unlock()
			}
		}(p.Name)
	}
	go func() { wg.Wait(); close(c.done) }()
	DeferCleanup(func() { cancel(); <-c.done })
	return c
}
