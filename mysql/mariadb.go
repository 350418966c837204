package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Flavor holds what differs between MariaDB and MySQL: the statements, how a server's
// state reads, and the server settings replicant needs.
type Flavor interface {
	Name() string
	ReadState(ctx context.Context, db *sql.DB) (State, error)
	SetReadOnlySQL(readOnly bool) string
	ChangeSourceSQL(src Source) (string, []any)
	StartReplicaSQL() string
	StopReplicaSQL() string
	StopReplicaIOSQL() string
	SemiSyncMasterSQL(on bool) string
	ResetReplicaSQL() string
	WaitForGTID(ctx context.Context, db *sql.DB, pos GTIDSet, timeout time.Duration) error
	UserSQL(u User) []Statement
	// OpenForProvisioning lets c create replicant's users on a fenced server (the
	// controller provisions before it opens writes); restore puts the fence back.
	OpenForProvisioning(ctx context.Context, c *sql.Conn) (restore func(context.Context) error, err error)
	// ReleaseWaitingCommits lets a fence through commits that wait for a semi-sync
	// acknowledgement no replica will send, without telling any client they
	// succeeded (see Server.ReleaseWaitingCommits).
	ReleaseWaitingCommits(ctx context.Context, s *Server) error
	// SetReplicaPos makes pos the position replication starts from.
	SetReplicaPos(ctx context.Context, db *sql.DB, pos GTIDSet) error
	// ConfigSettings are the flavor's [mysqld] settings for binlog with replica updates
	// in ROW format, strict GTIDs, read_only at start, no replication before the
	// controller says where from, a quick give-up on a vanished source, and (semiSync)
	// lossless semi-sync on the replica side with the master side off (the controller
	// switches it on on the server it elects, so a lone master never waits for acks).
	ConfigSettings(semiSync bool) []Setting
	// ImageInitOverrides replace ConfigSettings while the server image's entrypoint
	// initialises an empty datadir: it creates its users (MYSQL_ROOT_PASSWORD,
	// MYSQL_USER…) on a temporary server that reads the same configuration.
	ImageInitOverrides() []Setting
}

// Setting is one [mysqld] option.
type Setting struct{ Name, Value string }

// FlavorNamed is the flavor of a replicant.dev/flavor value.
func FlavorNamed(name string) (Flavor, error) {
	switch name {
	case "mariadb":
		return MariaDB{}, nil
	case "mysql":
		return MySQL{}, nil
	}
	return nil, fmt.Errorf("flavor %q: allowed: mariadb, mysql", name)
}

// State is one server as the controller sees it.
type State struct {
	Version           string
	ServerID          uint32
	ReadOnly          bool
	LogBin            bool
	BinlogFormat      string
	LogReplicaUpdates bool
	ReportHost        string
	// BinlogState is everything in the server's binlog (@@gtid_binlog_state): compare
	// these to find errant transactions. CurrentPos is what it has applied or written
	// (@@gtid_current_pos), ReplicaPos what replication applied (@@gtid_slave_pos).
	BinlogState GTIDSet
	CurrentPos  GTIDSet
	ReplicaPos  GTIDSet
	// Replica is nil when no source is configured.
	Replica  *ReplicaStatus
	SemiSync SemiSync
}

// ReplicaStatus is the part of SHOW SLAVE STATUS replicant uses.
type ReplicaStatus struct {
	SourceHost     string
	SourcePort     int
	SourceServerID uint32
	IORunning      string // Yes, No or Connecting
	SQLRunning     bool
	LastIOErrno    int
	LastIOError    string
	LastSQLErrno   int
	LastSQLError   string
	// SecondsBehind is nil when the server does not know (SQL thread stopped, ...).
	SecondsBehind *int64
	UsingGTID     string
	// ReceivedPos is what the IO thread has received (Gtid_IO_Pos), applied or not.
	ReceivedPos GTIDSet
}

// Replicating reports whether both replication threads run.
func (r *ReplicaStatus) Replicating() bool {
	return r != nil && r.IORunning == "Yes" && r.SQLRunning
}

// SemiSync is the semi-synchronous replication state: master side (acks expected;
// Active false while enabled means it fell back to async) and replica side.
type SemiSync struct {
	MasterEnabled  bool
	MasterActive   bool
	MasterClients  int
	ReplicaEnabled bool
	ReplicaActive  bool
}

// Waiting reports whether the master's commits really wait for a replica's
// acknowledgement: semi-sync enabled, not fallen back to async, and at least one
// semi-sync replica connected (with rpl_semi_sync_master_wait_no_slave=OFF the
// status stays ON while nobody is there to acknowledge).
func (s SemiSync) Waiting() bool { return s.MasterEnabled && s.MasterActive && s.MasterClients > 0 }

// MariaDB is the MariaDB flavor (10.6+; tested with 10.11).
type MariaDB struct{}

func (MariaDB) Name() string { return "mariadb" }

func (MariaDB) ReadState(ctx context.Context, db *sql.DB) (State, error) {
	var st State
	var reportHost sql.NullString
	var binlogState, currentPos, replicaPos string
	err := db.QueryRowContext(ctx, `SELECT @@version, @@server_id, @@read_only, @@log_bin, @@binlog_format,
		@@log_slave_updates, @@report_host, @@gtid_binlog_state, @@gtid_current_pos, @@gtid_slave_pos,
		@@rpl_semi_sync_master_enabled, @@rpl_semi_sync_slave_enabled`).Scan(
		&st.Version, &st.ServerID, &st.ReadOnly, &st.LogBin, &st.BinlogFormat, &st.LogReplicaUpdates, &reportHost,
		&binlogState, &currentPos, &replicaPos, &st.SemiSync.MasterEnabled, &st.SemiSync.ReplicaEnabled)
	if err != nil {
		return st, fmt.Errorf("read variables: %w", err)
	}
	st.ReportHost = reportHost.String
	for _, p := range []struct {
		dst *GTIDSet
		s   string
	}{{&st.BinlogState, binlogState}, {&st.CurrentPos, currentPos}, {&st.ReplicaPos, replicaPos}} {
		if *p.dst, err = ParseGTIDSet(p.s); err != nil {
			return st, err
		}
	}

	status, err := queryStatus(ctx, db, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients', 'Rpl_semi_sync_slave_status')")
	if err != nil {
		return st, fmt.Errorf("read semi-sync status: %w", err)
	}
	st.SemiSync.MasterActive = status["Rpl_semi_sync_master_status"] == "ON"
	st.SemiSync.MasterClients, _ = strconv.Atoi(status["Rpl_semi_sync_master_clients"])
	st.SemiSync.ReplicaActive = status["Rpl_semi_sync_slave_status"] == "ON"

	rs, row, err := readReplicaStatus(ctx, db, "SHOW SLAVE STATUS", mariadbColumns)
	if err != nil {
		return st, err
	}
	if rs != nil {
		rs.UsingGTID = row["Using_Gtid"]
		st.Replica = rs
	}
	return st, nil
}

func (MariaDB) SetReadOnlySQL(readOnly bool) string {
	if readOnly {
		return "SET GLOBAL read_only = ON"
	}
	return "SET GLOBAL read_only = OFF"
}

// ChangeSourceSQL replicates by GTID from the replica's own applied position; the
// 1 s heartbeat and retry let a replica notice a lost source and come back quickly.
func (MariaDB) ChangeSourceSQL(src Source) (string, []any) {
	return "CHANGE MASTER TO MASTER_HOST = ?, MASTER_PORT = ?, MASTER_USER = ?, MASTER_PASSWORD = ?, " +
			"MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1",
		[]any{src.Host, src.Port, src.User, src.Password}
}

func (MariaDB) StartReplicaSQL() string  { return "START SLAVE" }
func (MariaDB) StopReplicaSQL() string   { return "STOP SLAVE" }
func (MariaDB) StopReplicaIOSQL() string { return "STOP SLAVE IO_THREAD" }

func (MariaDB) SemiSyncMasterSQL(on bool) string {
	if on {
		return "SET GLOBAL rpl_semi_sync_master_enabled = ON"
	}
	return "SET GLOBAL rpl_semi_sync_master_enabled = OFF"
}
func (MariaDB) ResetReplicaSQL() string { return "RESET SLAVE ALL" }

// SetReplicaPos sets @@gtid_slave_pos (one GTID per domain); replication must be
// stopped.
func (MariaDB) SetReplicaPos(ctx context.Context, db *sql.DB, pos GTIDSet) error {
	_, err := db.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = ?", pos.Position().String())
	return err
}

// OpenForProvisioning has nothing to do on MariaDB: read_only does not bind an
// account with READ_ONLY ADMIN (root).
func (MariaDB) OpenForProvisioning(context.Context, *sql.Conn) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

// ReleaseWaitingCommits has nothing to do on MariaDB: a killed session stops
// waiting for its acknowledgement (its client gets an error) and releases its locks.
func (MariaDB) ReleaseWaitingCommits(context.Context, *Server) error { return nil }

// ImageInitOverrides: none on MariaDB, whose read_only does not bind the image's
// root account.
func (MariaDB) ImageInitOverrides() []Setting { return nil }

// ConfigSettings are MariaDB's [mysqld] settings for what Flavor.ConfigSettings
// promises.
func (MariaDB) ConfigSettings(semiSync bool) []Setting {
	settings := []Setting{
		{"log_slave_updates", "ON"},
		{"binlog_format", "ROW"},
		{"gtid_strict_mode", "ON"},
		{"read_only", "ON"},
		{"skip_slave_start", "ON"},
		// A replica whose master's node vanished (no RST, an address nobody answers)
		// must give up on it in seconds, not the default 60: STOP SLAVE waits for the
		// IO thread, and a promotion starts with one. Heartbeats come every second
		// (CHANGE MASTER), so a live master never trips it. Found by the e2e suite (a
		// lost node).
		{"slave_net_timeout", "4"},
	}
	if !semiSync {
		return append(settings, Setting{"rpl_semi_sync_slave_enabled", "OFF"}, Setting{"rpl_semi_sync_master_enabled", "OFF"})
	}
	return append(settings,
		Setting{"rpl_semi_sync_slave_enabled", "ON"},
		// STOP SLAVE connects to the master to end its dump thread; to a vanished
		// master that connection only times out (5 s by default).
		Setting{"rpl_semi_sync_slave_kill_conn_timeout", "1"},
		Setting{"rpl_semi_sync_master_enabled", "OFF"},
		Setting{"rpl_semi_sync_master_wait_point", "AFTER_SYNC"},
		// Never fall back to async: a master cut off from its replicas would go on
		// acknowledging writes that a failover then drops. Its commits wait instead,
		// until a replica acknowledges them or the sidecar fences the server (its
		// write lease ran out) and kills the waiting sessions: they get an error,
		// never success. The controller switches the master side on only where a
		// replica can acknowledge (docs/failover.md).
		Setting{"rpl_semi_sync_master_timeout", "4294967295"},
		Setting{"rpl_semi_sync_master_wait_no_slave", "ON"},
	)
}

func (MariaDB) WaitForGTID(ctx context.Context, db *sql.DB, pos GTIDSet, timeout time.Duration) error {
	var result sql.NullInt64
	err := db.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, ?)", pos.Position().String(), timeout.Seconds()).Scan(&result)
	switch {
	case err != nil:
		return err
	case !result.Valid:
		return fmt.Errorf("MASTER_GTID_WAIT returned NULL (bad position?)")
	case result.Int64 == -1:
		return ErrWaitTimeout
	}
	return nil
}

// UserSQL grants each role what it needs and nothing more (MariaDB 10.11 privileges).
func (MariaDB) UserSQL(u User) []Statement {
	var grants []string
	switch u.Role {
	case RoleReplication:
		grants = []string{"GRANT REPLICATION SLAVE ON *.* TO ?@'%'"}
	case RoleBackup:
		// mariadb-backup --backup: flush and lock (RELOAD, LOCK TABLES), see running
		// queries (PROCESS), read the binlog position (BINLOG MONITOR), replica info
		// with --slave-info (SLAVE MONITOR).
		grants = []string{"GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR, SLAVE MONITOR ON *.* TO ?@'%'"}
	case RoleAdmin:
		// Fence and open writes (READ_ONLY ADMIN), run replication (REPLICATION SLAVE
		// ADMIN, SLAVE MONITOR; RESET SLAVE ALL needs RELOAD), semi-sync master settings (REPLICATION MASTER ADMIN),
		// read binlog state (BINLOG MONITOR), end clients' sessions on fencing
		// (CONNECTION ADMIN, PROCESS), and its own heartbeat schema.
		grants = []string{
			"GRANT READ_ONLY ADMIN, RELOAD, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR, BINLOG MONITOR, BINLOG ADMIN, CONNECTION ADMIN, PROCESS ON *.* TO ?@'%'",
			"GRANT ALL PRIVILEGES ON `" + HeartbeatSchema + "`.* TO ?@'%'",
		}
	}
	return userStatements(u, grants)
}

// userStatements creates u (host '%') or resets its password, then grants it grants
// (statements whose one placeholder is the user's name). The same in both flavors.
func userStatements(u User, grants []string) []Statement {
	stmts := []Statement{
		{"CREATE USER IF NOT EXISTS ?@'%' IDENTIFIED BY ?", []any{u.Name, u.Password}},
		{"ALTER USER ?@'%' IDENTIFIED BY ?", []any{u.Name, u.Password}},
	}
	for _, g := range grants {
		stmts = append(stmts, Statement{g, []any{u.Name}})
	}
	return stmts
}

// replicaColumns names the columns of one flavor's SHOW SLAVE / REPLICA STATUS.
type replicaColumns struct {
	host, port, serverID, io, sql, behind, received string
}

var mariadbColumns = replicaColumns{"Master_Host", "Master_Port", "Master_Server_Id",
	"Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master", "Gtid_IO_Pos"}

// readReplicaStatus reads the replica status (nil when no source is configured) and
// its row, for the flavor's own columns.
func readReplicaStatus(ctx context.Context, db *sql.DB, query string, c replicaColumns) (*ReplicaStatus, map[string]string, error) {
	rows, err := queryRows(ctx, db, query)
	if err != nil {
		return nil, nil, fmt.Errorf("read replica status: %w", err)
	}
	if len(rows) == 0 {
		return nil, nil, nil
	}
	r := rows[0]
	rs := &ReplicaStatus{SourceHost: r[c.host], IORunning: r[c.io], SQLRunning: r[c.sql] == "Yes",
		LastIOError: r["Last_IO_Error"], LastSQLError: r["Last_SQL_Error"]}
	rs.SourcePort, _ = strconv.Atoi(r[c.port])
	id, _ := strconv.ParseUint(r[c.serverID], 10, 32)
	rs.SourceServerID = uint32(id)
	rs.LastIOErrno, _ = strconv.Atoi(r["Last_IO_Errno"])
	rs.LastSQLErrno, _ = strconv.Atoi(r["Last_SQL_Errno"])
	if v, err := strconv.ParseInt(r[c.behind], 10, 64); err == nil {
		rs.SecondsBehind = &v
	}
	if rs.ReceivedPos, err = ParseGTIDSet(r[c.received]); err != nil {
		return nil, nil, err
	}
	return rs, r, nil
}

// queryStatus reads a two-column (name, value) result into a map.
func queryStatus(ctx context.Context, db *sql.DB, query string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, rows.Err()
}

// queryRows reads any result into maps by column name (SHOW statements have many).
func queryRows(ctx context.Context, db *sql.DB, query string) ([]map[string]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out []map[string]string
	for rows.Next() {
		raw := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		row := make(map[string]string, len(cols))
		for i, c := range cols {
			row[c] = strings.TrimSpace(raw[i].String)
		}
		out = append(out, row)
	}
	return out, rows.Err()
}
