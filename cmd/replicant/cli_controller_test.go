package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/test/managed"
)

// TestCLIDrivesTheController: the verbs a user of orchestrator-client types, carried
// out by the real controller on real servers.
func TestCLIDrivesTheController(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := cliRunner(ctx, writeKubeconfig(t, cl.Env.Config, "default", ""))

	out, err := run("-c", "graceful-master-takeover", "-a", "db.default", "-d", "db-2.mysql.default:3306")
	if err != nil || !strings.Contains(out, "\ndb-2.mysql.default:3306\n") || !strings.Contains(out, "writes blocked") {
		t.Fatalf("graceful-master-takeover: %v\n%s", err, out)
	}
	if out, err := run("clusters-alias"); err != nil || out != "db-2.mysql.default:3306,db.default\n" {
		t.Errorf("clusters-alias: %v %q", err, out)
	}
	cl.Eventually("old master replicates", cl.Want(map[string]string{"db-0": "replica/yes", "db-1": "replica/yes", "db-2": "master/yes"}))
	out, err = run("topology", "-a", "db.default")
	if err != nil || !strings.HasPrefix(out, "db-2.mysql.default:3306   [0s,ok,") || strings.Count(out, "\n+ ") != 2 {
		t.Errorf("topology after the takeover: %v\n%s", err, out)
	}

	if out, err := run("-c", "reset-replica", "-i", "db-1.mysql.default:3306"); err != nil {
		t.Fatalf("reset-replica: %v\n%s", err, out)
	}
	cl.Eventually("detached", cl.Want(map[string]string{"db-0": "replica/yes", "db-1": "replica/no", "db-2": "master/yes"}))
	out, _ = run("topology", "-a", "db.default")
	if !strings.Contains(out, "- db-1.mysql.default:3306 [null,nonreplicating,") || !strings.Contains(out, ",downtimed]") {
		t.Errorf("topology after reset-replica:\n%s", out)
	}

	// A refusal exits non-zero with the controller's message and changes nothing.
	_, err = run("graceful-master-takeover", "-a", "db.default", "-d", "db-1")
	if err == nil || !strings.Contains(err.Error(), "takeover refused: db-1 is not a healthy replica") {
		t.Errorf("takeover to a detached replica: %v", err)
	}
	if cl.Master() != "db-2" {
		t.Errorf("a refused takeover moved the master to %s", cl.Master())
	}
}
