package mysql_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// TestBinlogSummaryMatchesTheServer (both flavors): the summaries of a real server's
// binlog files chain (each file starts where the previous ended), end where the
// server's own GTID state says, count every transaction, and tell closed files from
// the one being written.
func TestBinlogSummaryMatchesTheServer(t *testing.T) {
	for _, flavor := range []string{"mariadb", "mysql"} {
		t.Run(flavor, func(t *testing.T) { testBinlogSummary(t, flavor) })
	}
}

func testBinlogSummary(t *testing.T, flavor string) {
	ctx := context.Background()
	s := mariadb.Start(t, 1, mariadb.Options{Flavor: flavor})[0]
	db := s.DB()
	if flavor == "mysql" {
		s.Exec(ctx, "SET GLOBAL super_read_only = OFF") // the fence binds root there
	}
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
	cols, _ := rows.Columns()
	for rows.Next() {
		var name string
		dest := []any{&name}
		for range cols[1:] {
			dest = append(dest, new(any))
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	rows.Close()
	if len(names) < 4 {
		t.Fatalf("binlogs %v: want at least 4 after 3 flushes", names)
	}
	stateQuery := "SELECT @@gtid_binlog_state"
	if flavor == "mysql" {
		stateQuery = "SELECT @@global.gtid_executed"
	}
	var state, basename string
	if err := db.QueryRowContext(ctx, stateQuery).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRowContext(ctx, "SELECT @@log_bin_basename").Scan(&basename); err != nil {
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

	var prev mysql.GTIDSet
	total := 0
	for i, name := range names {
		f, err := os.Open(filepath.Join(filepath.Dir(basename), name))
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
		if i > 0 && !sum.Start.Equal(prev) {
			t.Errorf("%s starts at %q, the previous file ended at %q", name, sum.Start, prev)
		}
		if !sum.End.Contains(sum.Start) {
			t.Errorf("%s ends at %q, short of where it starts, %q", name, sum.End, sum.Start)
		}
		if sum.ServerID != serverID || (i > 0 && sum.Created.Before(before)) {
			t.Errorf("%s: server %d created %v, want server %d after %v", name, sum.ServerID, sum.Created, serverID, before)
		}
		if i > 0 && sum.Transactions > 0 && (sum.FirstTime.Before(before) || sum.LastTime.Before(sum.FirstTime)) {
			t.Errorf("%s: transactions from %v to %v", name, sum.FirstTime, sum.LastTime)
		}
		total += sum.Transactions
		prev = sum.End
	}
	if !prev.Equal(want) {
		t.Errorf("the last file ends at %q, the server's GTID state is %q", prev, want)
	}
	// 31 inserts and 3 flushes' worth of files: at least the 31 inserts in them.
	if total < 31 {
		t.Errorf("%d transactions in the binlogs, want at least 31", total)
	}
	t.Logf("%d files, %d transactions, ending at %s", len(names), total, prev)
}

func TestBinlogSummaryRefusesOtherFiles(t *testing.T) {
	if _, err := mysql.ReadBinlogSummary(bytes.NewReader([]byte("-- a SQL dump\n"))); !errors.Is(err, mysql.ErrNotBinlog) {
		t.Errorf("a SQL file: %v", err)
	}
	if _, err := mysql.ReadBinlogSummary(bytes.NewReader(append([]byte{0xfe, 'b', 'i', 'n'}, bytes.Repeat([]byte{0xff}, 19)...))); err == nil {
		t.Error("an event of size 4 GiB was accepted")
	}
	// A MySQL Previous_gtids event that claims 1000 sources in 8 bytes.
	event := make([]byte, 19+8)
	event[4] = 35
	binary.LittleEndian.PutUint32(event[9:13], uint32(len(event)))
	binary.LittleEndian.PutUint64(event[19:], 1000)
	if _, err := mysql.ReadBinlogSummary(bytes.NewReader(append([]byte{0xfe, 'b', 'i', 'n'}, event...))); err == nil || !strings.Contains(err.Error(), "Previous_gtids") {
		t.Errorf("a Previous_gtids event cut short: %v", err)
	}
}
