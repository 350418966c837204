package managed

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// APICounter counts the manager's requests to the apiserver that change something
// (POST, PUT, PATCH, DELETE), by method and resource, leader-election Leases aside.
type APICounter struct {
	mu     sync.Mutex
	writes map[string]int
}

// wrap counts through every transport the manager's clients make.
func (c *APICounter) wrap(next http.RoundTripper) http.RoundTripper {
	return countingTransport{c, next}
}

type countingTransport struct {
	c    *APICounter
	next http.RoundTripper
}

func (t countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && !strings.Contains(req.URL.Path, "/leases/") {
		t.c.mu.Lock()
		t.c.writes[req.Method+" "+resourceOf(req.URL.Path)]++
		t.c.mu.Unlock()
	}
	return t.next.RoundTrip(req)
}

// resourceOf turns /api/v1/namespaces/default/pods/db-0 into "pods",
// /apis/apps/v1/namespaces/default/statefulsets/db into "statefulsets".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i, p := range parts {
		if p == "namespaces" && i+2 < len(parts) {
			return parts[i+2]
		}
	}
	if len(parts) > 0 {
		return parts[len(parts)-1]
	}
	return path
}

// Writes returns the counts so far, and their total.
func (c *APICounter) Writes() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, total := map[string]int{}, 0
	for k, v := range c.writes {
		out[k] = v
		total += v
	}
	return out, total
}

// Since returns what was written after an earlier Writes, as "PATCH pods: 3, …".
func (c *APICounter) Since(before map[string]int) (string, int) {
	now, _ := c.Writes()
	var parts []string
	total := 0
	for k, v := range now {
		if d := v - before[k]; d > 0 {
			parts = append(parts, k+": "+strconv.Itoa(d))
			total += d
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", "), total
}
