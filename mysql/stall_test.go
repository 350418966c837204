package mysql_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// vanishingProxy forwards TCP to a server until vanish: from then on nothing passes
// in either direction and new connections are not even accepted (SYNs dropped), as
// with a master whose node is gone.
type vanishingProxy struct {
	t         *testing.T
	ln        net.Listener
	addr      string
	gone      atomic.Bool
	mu        sync.Mutex
	conns     []net.Conn
	closed    chan struct{}
	accepting chan struct{} // closed when the accept loop has stopped
}

func startVanishingProxy(t *testing.T, host, target string) *vanishingProxy {
	t.Helper()
	// The smallest backlog, so that once the proxy stops accepting one queued
	// connection fills it and the kernel drops further SYNs.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sa syscall.SockaddrInet4
	copy(sa.Addr[:], net.ParseIP(host).To4())
	if err := syscall.Bind(fd, &sa); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "proxy")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	p := &vanishingProxy{t: t, ln: ln, addr: ln.Addr().String(), closed: make(chan struct{}), accepting: make(chan struct{})}
	t.Cleanup(func() {
		close(p.closed)
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go func() {
		defer close(p.accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.hold(c)
			if p.gone.Load() {
				return // this one is never answered, and nothing more is accepted
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.hold(up)
			go p.pipe(c, up)
			go p.pipe(up, c)
		}
	}()
	return p
}

// vanish stalls every connection and makes new ones hang in connect().
func (p *vanishingProxy) vanish() {
	p.t.Helper()
	p.gone.Store(true)
	dial := func(timeout time.Duration) error {
		c, err := net.DialTimeout("tcp", p.addr, timeout)
		if err == nil {
			p.hold(c)
		}
		return err
	}
	if err := dial(time.Second); err != nil { // taken by the accept loop, which then stops
		p.t.Fatal(err)
	}
	<-p.accepting
	_ = dial(time.Second) // fills the queue
	if dial(300*time.Millisecond) == nil {
		p.t.Fatal("the vanished proxy still completes connections: SYNs are not dropped")
	}
}

func (p *vanishingProxy) hold(c net.Conn) {
	p.mu.Lock()
	p.conns = append(p.conns, c)
	p.mu.Unlock()
}

// pipe copies until the proxy vanishes, then stalls (holding both ends open).
func (p *vanishingProxy) pipe(from, to net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := from.Read(buf)
		if p.gone.Load() {
			<-p.closed
			return
		}
		if n > 0 {
			if _, werr := to.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *vanishingProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// A promotion starts with STOP SLAVE IO_THREAD on the candidate, whose master may
// have vanished (its node gone: packets dropped, no RST). With semi-sync the stop also
// connects to the master to end its dump thread. It must return within the query
// timeout the controller allows. (On a real node the e2e suite saw it exceed that
// with the server defaults; the fragment's slave_net_timeout and
// rpl_semi_sync_slave_kill_conn_timeout bound both waits.)
//
// The stop comes at once (its IO thread still waits on the vanished connection) or
// after the replica has noticed (replica_net_timeout) and tries to connect again: a
// promotion comes seconds after the master vanished (found by the e2e suite on MySQL,
// whose stop waited for that connection attempt). Each within the controller's bound
// (the query timeout of its pool, twice its 1 s probe timeout, or StopReplicaBound
// for a STOP).
func TestStopReplicaIOReturnsWhenTheMasterVanished(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		for _, after := range []time.Duration{0, 7 * time.Second} {
			t.Run(fmt.Sprintf("%s/after %v", flavor, after), func(t *testing.T) { testStopReplicaIOWhenTheMasterVanished(t, flavor, after) })
		}
	}
}

func testStopReplicaIOWhenTheMasterVanished(t *testing.T, flavor string, after time.Duration) {
	servers := mariadb.Start(t, 2, mariadb.Options{Flavor: flavor, Cluster: "vanish"})
	master := open(t, servers[0], "root", mariadb.RootPassword)
	replica, err := mysql.Open(mysql.Config{Addr: servers[1].Addr(), User: "root", Password: mariadb.RootPassword,
		ConnectTimeout: time.Second, QueryTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { replica.Close() })
	ctx := context.Background()
	if err := master.SetSemiSyncMaster(ctx, true); err != nil {
		t.Fatal(err)
	}
	proxy := startVanishingProxy(t, servers[1].Host, servers[0].Addr())
	if err := replica.ChangeSource(ctx, mysql.Source{Host: servers[1].Host, Port: proxy.port(), User: "root", Password: mariadb.RootPassword}); err != nil {
		t.Fatal(err)
	}
	if err := replica.StartReplica(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !state(t, replica).Replica.Replicating() || !state(t, replica).SemiSync.ReplicaActive {
		if time.Now().After(deadline) {
			t.Fatalf("replica never replicated semi-synchronously through the proxy: %+v", state(t, replica))
		}
		time.Sleep(100 * time.Millisecond)
	}

	proxy.vanish()
	time.Sleep(after)
	start := time.Now()
	err = replica.StopReplicaIO(ctx)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("STOP SLAVE IO_THREAD after the master vanished, after %v: %v", took.Round(time.Millisecond), err)
	}
	t.Logf("STOP SLAVE IO_THREAD returned %v after the master vanished", took.Round(time.Millisecond))
	if flavor != "mariadb" {
		return
	}
	var killTimeout int
	if err := servers[1].DB().QueryRow("SELECT @@rpl_semi_sync_slave_kill_conn_timeout").Scan(&killTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("rpl_semi_sync_slave_kill_conn_timeout = %d", killTimeout)
}
