package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"
)

// MySQL is the MySQL flavor: 8.4 and 9.7 LTS (tested with 9.7; the statements need
// 8.0.23 at least: CHANGE REPLICATION SOURCE TO, SHOW REPLICA STATUS, and the
// rpl_semi_sync_source/replica plugins of 8.0.26).
//
// What differs from MariaDB: super_read_only is the fence (read_only alone lets
// CONNECTION_ADMIN accounts write); a server's GTIDs are UUID interval sets
// (@@gtid_executed, which names purged transactions too, so it is the whole history
// and its own position); replicas find their position by SOURCE_AUTO_POSITION; the
// semi-sync settings are plugins' variables, named source/replica.
type MySQL struct{}

var mysqlColumns = replicaColumns{"Source_Host", "Source_Port", "Source_Server_Id",
	"Replica_IO_Running", "Replica_SQL_Running", "Seconds_Behind_Source", "Retrieved_Gtid_Set"}

func (MySQL) Name() string { return "mysql" }

func (MySQL) ReadState(ctx context.Context, db *sql.DB) (State, error) {
	var st State
	var reportHost sql.NullString
	var executed string
	err := db.QueryRowContext(ctx, `SELECT @@version, @@server_id, @@read_only, @@log_bin, @@binlog_format,
		@@log_replica_updates, @@report_host, @@gtid_executed`).Scan(
		&st.Version, &st.ServerID, &st.ReadOnly, &st.LogBin, &st.BinlogFormat, &st.LogReplicaUpdates, &reportHost, &executed)
	if err != nil {
		return st, fmt.Errorf("read variables: %w", err)
	}
	st.ReportHost = reportHost.String
	if st.BinlogState, err = ParseGTIDSet(executed); err != nil {
		return st, err
	}
	// gtid_executed is what it wrote and applied alike.
	st.CurrentPos, st.ReplicaPos = st.BinlogState, st.BinlogState

	// The semi-sync variables exist only while their plugins are loaded: a server
	// without them simply has semi-sync off.
	vars, err := queryStatus(ctx, db, "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('rpl_semi_sync_source_enabled', 'rpl_semi_sync_replica_enabled')")
	if err != nil {
		return st, fmt.Errorf("read semi-sync settings: %w", err)
	}
	st.SemiSync.MasterEnabled = vars["rpl_semi_sync_source_enabled"] == "ON"
	st.SemiSync.ReplicaEnabled = vars["rpl_semi_sync_replica_enabled"] == "ON"
	status, err := queryStatus(ctx, db, "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_source_status', 'Rpl_semi_sync_source_clients', 'Rpl_semi_sync_replica_status')")
	if err != nil {
		return st, fmt.Errorf("read semi-sync status: %w", err)
	}
	st.SemiSync.MasterActive = status["Rpl_semi_sync_source_status"] == "ON"
	st.SemiSync.MasterClients, _ = strconv.Atoi(status["Rpl_semi_sync_source_clients"])
	st.SemiSync.ReplicaActive = status["Rpl_semi_sync_replica_status"] == "ON"

	rs, row, err := readReplicaStatus(ctx, db, "SHOW REPLICA STATUS", mysqlColumns)
	if err != nil {
		return st, err
	}
	if rs != nil {
		rs.UsingGTID = "No"
		if row["Auto_Position"] == "1" {
			rs.UsingGTID = "Auto_Position"
		}
		// Retrieved_Gtid_Set is what the IO thread received since the relay log
		// began; with what it executed, that is everything it has.
		rs.ReceivedPos = rs.ReceivedPos.Union(st.BinlogState)
		st.Replica = rs
	}
	return st, nil
}

// SetReadOnlySQL fences with super_read_only (which sets read_only too) and opens by
// clearing both (clearing read_only clears super_read_only).
func (MySQL) SetReadOnlySQL(readOnly bool) string {
	if readOnly {
		return "SET GLOBAL super_read_only = ON"
	}
	return "SET GLOBAL read_only = OFF"
}

// ChangeSourceSQL replicates by GTID auto-position; the 1 s heartbeat and retry let a
// replica notice a lost source and come back quickly. GET_SOURCE_PUBLIC_KEY lets the
// replication account's caching_sha2_password log in without TLS.
func (MySQL) ChangeSourceSQL(src Source) (string, []any) {
	return "CHANGE REPLICATION SOURCE TO SOURCE_HOST = ?, SOURCE_PORT = ?, SOURCE_USER = ?, SOURCE_PASSWORD = ?, " +
			"SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1, SOURCE_HEARTBEAT_PERIOD = 1, GET_SOURCE_PUBLIC_KEY = 1",
		[]any{src.Host, src.Port, src.User, src.Password}
}

func (MySQL) StartReplicaSQL() string  { return "START REPLICA" }
func (MySQL) StopReplicaSQL() string   { return "STOP REPLICA" }
func (MySQL) StopReplicaIOSQL() string { return "STOP REPLICA IO_THREAD" }

func (MySQL) SemiSyncMasterSQL(on bool) string {
	if on {
		return "SET GLOBAL rpl_semi_sync_source_enabled = ON"
	}
	return "SET GLOBAL rpl_semi_sync_source_enabled = OFF"
}

func (MySQL) ResetReplicaSQL() string { return "RESET REPLICA ALL" }

// SetReplicaPos does nothing on MySQL: auto-position starts from @@gtid_executed,
// which already is everything the server holds.
func (MySQL) SetReplicaPos(context.Context, *sql.DB, GTIDSet) error { return nil }

func (MySQL) WaitForGTID(ctx context.Context, db *sql.DB, pos GTIDSet, timeout time.Duration) error {
	var result sql.NullInt64
	// A timeout of 0 would mean "wait for ever" here: the shortest wait instead.
	err := db.QueryRowContext(ctx, "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)", pos.String(), max(timeout.Seconds(), 0.001)).Scan(&result)
	switch {
	case err != nil:
		return err
	case !result.Valid:
		return fmt.Errorf("WAIT_FOR_EXECUTED_GTID_SET returned NULL (bad set?)")
	case result.Int64 == 1:
		return ErrWaitTimeout
	}
	return nil
}

// UserSQL grants each role what it needs and nothing more (MySQL 8.4 dynamic
// privileges). Accounts use caching_sha2_password, the default.
func (MySQL) UserSQL(u User) []Statement {
	var grants []string
	switch u.Role {
	case RoleReplication:
		// Replicas connect with it; a clone's recipient logs in to its donor with it
		// (BACKUP_ADMIN on the donor).
		grants = []string{"GRANT REPLICATION SLAVE, BACKUP_ADMIN ON *.* TO ?@'%'"}
	case RoleBackup:
		// A clone to a local directory (BACKUP_ADMIN), see running queries (PROCESS),
		// read the binlog position and list binlogs (REPLICATION CLIENT), flush them
		// (RELOAD), read the clone's progress (performance_schema).
		grants = []string{
			"GRANT BACKUP_ADMIN, RELOAD, PROCESS, REPLICATION CLIENT ON *.* TO ?@'%'",
			"GRANT SELECT ON performance_schema.* TO ?@'%'",
		}
	case RoleAdmin:
		// Fence and open writes and switch semi-sync (SYSTEM_VARIABLES_ADMIN), run
		// replication (REPLICATION_SLAVE_ADMIN, REPLICATION CLIENT; RESET REPLICA ALL
		// and FLUSH BINARY LOGS need RELOAD), purge binlogs (BINLOG_ADMIN), end
		// clients' sessions on fencing (CONNECTION_ADMIN, PROCESS; SYSTEM_USER to end
		// those of root and other system accounts too: a root commit waiting for a
		// semi-sync acknowledgement would otherwise hold the fence), and its own
		// heartbeat schema.
		grants = []string{
			"GRANT SYSTEM_VARIABLES_ADMIN, REPLICATION_SLAVE_ADMIN, REPLICATION CLIENT, RELOAD, BINLOG_ADMIN, CONNECTION_ADMIN, SYSTEM_USER, PROCESS ON *.* TO ?@'%'",
			"GRANT ALL PRIVILEGES ON `" + HeartbeatSchema + "`.* TO ?@'%'",
		}
	}
	return userStatements(u, grants)
}

// OpenForProvisioning lifts super_read_only while replicant's users are created
// (read_only stays on, so applications remain fenced: only accounts with
// CONNECTION_ADMIN, root, could write meanwhile) and restore sets it again. A server
// without super_read_only is left as it is.
func (MySQL) OpenForProvisioning(ctx context.Context, c *sql.Conn) (func(context.Context) error, error) {
	var fenced bool
	if err := c.QueryRowContext(ctx, "SELECT @@global.super_read_only").Scan(&fenced); err != nil {
		return nil, err
	}
	if !fenced {
		return func(context.Context) error { return nil }, nil
	}
	if _, err := c.ExecContext(ctx, "SET GLOBAL super_read_only = OFF"); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		_, err := c.ExecContext(ctx, "SET GLOBAL super_read_only = ON")
		return err
	}, nil
}

// ReleaseWaitingCommits: MySQL keeps a killed session waiting for its semi-sync
// acknowledgement (only its client's connection is closed), and the commit lock it
// holds makes SET GLOBAL super_read_only wait as long. So: offline_mode first, which
// drops every client without CONNECTION_ADMIN and refuses new ones, then the other
// client sessions are killed; now nobody is left to hear that a commit succeeded, and
// the source side of semi-sync is switched off, which lets the waiting commits finish
// locally. They never reached a replica and no client was told: the old master holds
// them as unacknowledged transactions, which the controller quarantines as on MariaDB.
// Then super_read_only, and offline_mode off again (reads may come back).
func (MySQL) ReleaseWaitingCommits(ctx context.Context, s *Server) (err error) {
	if err := s.exec(ctx, "fence: offline mode", "SET GLOBAL offline_mode = ON"); err != nil {
		return err
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.Background(), s.queryTimeout)
		defer cancel()
		if oerr := s.exec(rctx, "fence: end offline mode", "SET GLOBAL offline_mode = OFF"); oerr != nil && err == nil {
			err = oerr
		}
	}()
	if _, err := s.KillClientSessions(ctx); err != nil {
		return err
	}
	if err := s.exec(ctx, "fence: release commits waiting for semi-sync", "SET GLOBAL rpl_semi_sync_source_enabled = OFF"); err != nil {
		return err
	}
	return s.exec(ctx, "set read_only", "SET GLOBAL super_read_only = ON")
}

// ConfigSettings are MySQL's [mysqld] settings for what Flavor.ConfigSettings
// promises.
func (MySQL) ConfigSettings(semiSync bool) []Setting {
	settings := []Setting{
		{"log_replica_updates", "ON"},
		{"gtid_mode", "ON"},
		{"enforce_gtid_consistency", "ON"},
		{"read_only", "ON"},
		{"super_read_only", "ON"},
		{"skip_replica_start", "ON"},
		{"replica_net_timeout", "4"},
		// The clone plugin: a new server copies its datadir from a running one.
		{"plugin_load_add", "mysql_clone.so"},
	}
	if !semiSync {
		return settings
	}
	// The plugins' variables are "loose_": mysqld --initialize (the image's entrypoint
	// runs it on an empty datadir with this configuration) loads no plugin and would
	// refuse them as unknown. A started server loads the plugins first and sets them.
	return append(settings,
		Setting{"plugin_load_add", "semisync_source.so"},
		Setting{"plugin_load_add", "semisync_replica.so"},
		Setting{"loose_rpl_semi_sync_replica_enabled", "ON"},
		Setting{"loose_rpl_semi_sync_source_enabled", "OFF"},
		Setting{"loose_rpl_semi_sync_source_wait_point", "AFTER_SYNC"},
		// Never fall back to async (see MariaDB's ConfigSettings).
		Setting{"loose_rpl_semi_sync_source_timeout", "4294967295"},
		Setting{"loose_rpl_semi_sync_source_wait_no_replica", "ON"},
	)
}

// ImageInitOverrides: super_read_only binds root too, and the official image's
// entrypoint creates its users as root on a temporary server that reads replicant's
// fragment; read_only stays on, so applications are still refused. Only the very
// first start of a new cluster's pod 0 runs with it (the clone's "start empty"); the
// controller opens that server as the master anyway.
func (MySQL) ImageInitOverrides() []Setting {
	return []Setting{{"super_read_only", "OFF"}}
}
