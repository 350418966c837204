package failover_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// proxy forwards a loopback address's ports 3306 (the server) and 8080 (its sidecar)
// to a pod's; cut() drops every connection and refuses new ones, like a network
// path that broke.
type proxy struct {
	addr  string
	ls    []net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newProxy(t testing.TB, targetHost string) *proxy {
	var l, side net.Listener
	var err error
	for i := 0; i < 50; i++ {
		host := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(250))
		if l, err = net.Listen("tcp", net.JoinHostPort(host, "3306")); err != nil {
			continue
		}
		if side, err = net.Listen("tcp", net.JoinHostPort(host, "8080")); err == nil {
			break
		}
		l.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: l.Addr().(*net.TCPAddr).IP.String(), ls: []net.Listener{l, side}}
	go p.forward(l, net.JoinHostPort(targetHost, "3306"))
	go p.forward(side, net.JoinHostPort(targetHost, "8080"))
	t.Cleanup(p.cut)
	return p
}

func (p *proxy) forward(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", target, time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { io.Copy(up, c); up.Close() }()
		go func() { io.Copy(c, up); c.Close() }()
	}
}

func (p *proxy) cut() {
	for _, l := range p.ls {
		l.Close()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestControllerAloneLosingTheMasterDoesNotFailOver: the controller reaches the
// master through a path that breaks; the replicas, replicating from the master's
// report_host, still receive from it. No failover; the master, whose write lease the
// controller can no longer renew, fences itself.
func TestControllerAloneLosingTheMasterDoesNotFailOver(t *testing.T) {
	var path *proxy
	cl := managed.StartWith(t, 3, managed.Options{
		Addressing: failover.SourceReportHost,
		PodIP: func(s *mariadb.Server) string {
			if s.Name != "db-0" {
				return s.Host
			}
			path = newProxy(t, s.Host)
			return path.addr
		},
	})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	// Replicas address the master through the headless Service here: one that
	// publishes only Ready pods is reported.
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mysql", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "mysql", Port: 3306}}}}
	if err := cl.C.Create(cl.Ctx, headless); err != nil {
		t.Fatal(err)
	}
	cl.Event("HeadlessServiceFragile")
	path.cut()
	cl.Event("FailoverHeld")
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if m := cl.Master(); m != "db-0" {
			t.Fatalf("failed over to %s although the replicas still receive from db-0", m)
		}
	}
	// Its write lease is no longer renewed: db-0's sidecar fences it (the
	// controller cannot tell this from a master cut off from everyone). No server
	// takes writes; the replicas stay read-only.
	cl.Eventually("db-0 fenced by its sidecar", func() error {
		if !cl.ReadOnly(cl.Servers[0]) {
			return fmt.Errorf("db-0 still writable")
		}
		return nil
	})
	if !cl.ReadOnly(cl.Servers[1]) || !cl.ReadOnly(cl.Servers[2]) {
		t.Errorf("a replica is writable")
	}
	if m := cl.Master(); m != "db-0" {
		t.Errorf("failed over to %s", m)
	}
}
