package mysql_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// TestBinlogSummaryMatchesTheServer: the summaries of a real server's binlog files
// chain (each file starts where the previous ended), end where @@gtid_binlog_state
// says, count every transaction, and tell closed files from the one being written.
func TestBinlogSummaryMatchesTheServer(t *testing.T) {
	ctx := context.Background()
	s := mariadb.Start(t, 1, mariadb.Options{})[0]
	db := s.DB()
	s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS app", "CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT)")
	before := time.Now().Add(-time.Second).Truncate(time.Second)
	for i := 1; i <= 30; i++ {
		if _, err := db.ExecContext(ctx, "INSERT INTO app.t VALUES (?, REPEAT('x', 1000))", i); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			s.Exec(ctx, "FLUSH BINARY LOGS")
		}
	}
	s.Exec(ctx, "INSERT INTO app.t VALUES (31, 'open file')")

	var names []string
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var size any
		if err := rows.Scan(&name, &size); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	rows.Close()
	if len(names) < 4 {
		t.Fatalf("binlogs %v: want at least 4 after 3 flushes", names)
	}
	var state string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_state").Scan(&state); err != nil {
		t.Fatal(err)
	}
	var serverID uint32
	if err := db.QueryRowContext(ctx, "SELECT @@server_id").Scan(&serverID); err != nil {
		t.Fatal(err)
	}
	want, err := mysql.ParseGTIDSet(state)
	if err != nil {
		t.Fatal(err)
	}

	prev := mysql.GTIDSet{}
	total := 0
	for i, name := range names {
		f, err := os.Open(filepath.Join(s.Datadir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum, err := mysql.ReadBinlogSummary(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		last := i == len(names)-1
		if sum.Closed == last {
			t.Errorf("%s: closed=%v, want %v", name, sum.Closed, !last)
		}
		if !sum.Start.Equal(prev) {
			t.Errorf("%s starts at %q, the previous file ended at %q", name, sum.Start, prev)
		}
		if sum.ServerID != serverID || sum.Created.Before(before) {
			t.Errorf("%s: server %d created %v, want server %d after %v", name, sum.ServerID, sum.Created, serverID, before)
		}
		if sum.Transactions > 0 && (sum.FirstTime.Before(before) || sum.LastTime.Before(sum.FirstTime)) {
			t.Errorf("%s: transactions from %v to %v", name, sum.FirstTime, sum.LastTime)
		}
		total += sum.Transactions
		prev = sum.End
	}
	if !prev.Equal(want) {
		t.Errorf("the last file ends at %q, the server's binlog state is %q", prev, want)
	}
	// 31 inserts, plus the schema's statements and the test harness's own writes.
	if total < 33 {
		t.Errorf("%d transactions in the binlogs, want at least 33", total)
	}
}

func TestBinlogSummaryRefusesOtherFiles(t *testing.T) {
	if _, err := mysql.ReadBinlogSummary(bytes.NewReader([]byte("-- a SQL dump\n"))); !errors.Is(err, mysql.ErrNotBinlog) {
		t.Errorf("a SQL file: %v", err)
	}
	if _, err := mysql.ReadBinlogSummary(bytes.NewReader(append([]byte{0xfe, 'b', 'i', 'n'}, bytes.Repeat([]byte{0xff}, 19)...))); err == nil {
		t.Error("an event of size 4 GiB was accepted")
	}
}
