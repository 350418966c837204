package managed

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards some ports of a loopback address of its own to the same ports of a
// target host: a network path that tests can cut (every connection dropped, new ones
// refused) and heal.
type Proxy struct {
	Addr   string // the proxy's own loopback address
	target string
	ports  []string
	mu     sync.Mutex
	ls     []net.Listener
	conns  []net.Conn
}

// NewProxy listens on a free 127.x.y.z address for every port; it is cut when the
// test ends.
func NewProxy(t testing.TB, target string, ports ...string) *Proxy {
	t.Helper()
	for i := 0; i < 50; i++ {
		p := &Proxy{Addr: fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(250)), target: target, ports: ports}
		if p.listen() == nil {
			t.Cleanup(p.Cut)
			return p
		}
	}
	t.Fatal("no free loopback address for a proxy")
	return nil
}

func (p *Proxy) listen() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ls []net.Listener
	for _, port := range p.ports {
		l, err := net.Listen("tcp", net.JoinHostPort(p.Addr, port))
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		ls = append(ls, l)
	}
	p.ls = ls
	for i, l := range ls {
		go p.forward(l, net.JoinHostPort(p.target, p.ports[i]))
	}
	return nil
}

func (p *Proxy) forward(l net.Listener, target string) {
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

// Cut drops every connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.ls {
		l.Close()
	}
	p.ls = nil
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Heal forwards again, on the same address.
func (p *Proxy) Heal(t testing.TB) {
	t.Helper()
	if err := p.listen(); err != nil {
		t.Fatal(err)
	}
}
