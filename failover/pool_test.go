package failover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

// TestARotatedPasswordReplacesThePool: one pool per server and user; a new password
// (a rotated Secret) closes the old pool instead of keeping it open beside the new.
func TestARotatedPasswordReplacesThePool(t *testing.T) {
	r := &Reconciler{pools: map[string]pooled{}, Options: Options{ProbeTimeout: time.Second}}
	before := r.pool("127.0.0.1:3306", mysql.User{Name: "replicant_admin", Password: "old"})
	if again := r.pool("127.0.0.1:3306", mysql.User{Name: "replicant_admin", Password: "old"}); again != before {
		t.Fatal("the same credentials opened a second pool")
	}
	after := r.pool("127.0.0.1:3306", mysql.User{Name: "replicant_admin", Password: "new"})
	if after == before || len(r.pools) != 1 {
		t.Fatalf("after a rotation: %d pools, replaced %v", len(r.pools), after != before)
	}
	if err := before.Ping(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("the old pool is still open: %v", err)
	}
	r.mu.Lock()
	r.closePools("127.0.0.1:3306")
	r.mu.Unlock()
	if len(r.pools) != 0 {
		t.Errorf("%d pools left after closing the address", len(r.pools))
	}
}
