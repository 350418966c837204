// Package mysql is the one place in replicant that speaks SQL to a server. A Server
// wraps a connection pool to one mariadbd or mysqld (the differences behind the
// Flavor interface: mariadb.go, flavor_mysql.go) with tight timeouts, and offers what
// the sidecar and the controller need: read a server's state, switch read_only, point
// a replica at a source by GTID, start/stop/reset replication, wait for a GTID
// position, create replicant's users, and a heartbeat for lag. GTIDSet (gtid.go) compares what servers hold.
//
// Values always travel as placeholders (the driver interpolates and escapes them on
// the client, so they also work where the server cannot take a placeholder, such as
// CHANGE MASTER TO). Errors name the server and the operation, never a password.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Config says how to reach a server.
type Config struct {
	Addr     string // host:port
	User     string
	Password string
	// ConnectTimeout bounds a connection attempt (default 2s), QueryTimeout every
	// statement (default 5s).
	ConnectTimeout time.Duration
	QueryTimeout   time.Duration
}

// Server is a connection pool to one server.
type Server struct {
	addr         string
	db           *sql.DB
	queryTimeout time.Duration

	flavorMu sync.Mutex
	flavor   Flavor // nil until detected (Open without a flavor)
}

// Error is a failed operation on a server. It never holds statement text (which may
// carry a password), only the operation's name.
type Error struct {
	Server string
	Op     string
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("mysql %s: %s: %v", e.Server, e.Op, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// quietDriver keeps the driver's own log lines ("closing bad idle connection") out
// of replicant's logs: every failure reaches the caller as an error.
var quietDriver sync.Once

// Open prepares a pool to the server (it connects lazily). With flavor nil the
// server's own @@version says which it is, read once at the first statement: the
// controller and the sidecar then speak to whatever runs, MariaDB or MySQL.
func Open(cfg Config, flavor Flavor) (*Server, error) {
	quietDriver.Do(func() { _ = mysql.SetLogger(log.New(io.Discard, "", 0)) })
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	if cfg.QueryTimeout == 0 {
		cfg.QueryTimeout = 5 * time.Second
	}
	dc := mysql.NewConfig()
	dc.Net, dc.Addr, dc.User, dc.Passwd = "tcp", cfg.Addr, cfg.User, cfg.Password
	dc.Timeout = cfg.ConnectTimeout
	// Read/write timeouts a little above the query timeout: the context normally ends
	// a statement first; these catch a peer that stops answering mid-packet.
	longest := max(cfg.QueryTimeout, StopReplicaBound)
	dc.ReadTimeout, dc.WriteTimeout = longest+time.Second, longest+time.Second
	dc.InterpolateParams = true
	dc.ParseTime = true
	connector, err := mysql.NewConnector(dc)
	if err != nil {
		return nil, &Error{Server: cfg.Addr, Op: "configure", Err: err}
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(time.Minute)
	// A session keeps the global privileges it logged in with: one opened before a
	// replicated GRANT arrived would lack them for as long as it is reused.
	db.SetConnMaxLifetime(time.Minute)
	return &Server{addr: cfg.Addr, db: db, flavor: flavor, queryTimeout: cfg.QueryTimeout}, nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

// Close closes the pool.
func (s *Server) Close() error { return s.db.Close() }

// ForgetSessions closes the idle connections: the next statements log in again (and
// get the account's current global privileges).
func (s *Server) ForgetSessions() {
	s.db.SetMaxIdleConns(0)
	s.db.SetMaxIdleConns(2)
}

// flavorFor is the server's flavor, detected at the first statement when Open had
// none; a failure to detect it names op, as op's own failure would.
func (s *Server) flavorFor(ctx context.Context, op string) (Flavor, error) {
	s.flavorMu.Lock()
	defer s.flavorMu.Unlock()
	if s.flavor != nil {
		return s.flavor, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	var version string
	if err := s.db.QueryRowContext(ctx, "SELECT @@version").Scan(&version); err != nil {
		return nil, s.wrap(op, err)
	}
	s.flavor = Flavor(MySQL{})
	if strings.Contains(version, "MariaDB") {
		s.flavor = MariaDB{}
	}
	return s.flavor, nil
}

// execFlavored runs the statement the server's flavor gives for op.
func (s *Server) execFlavored(ctx context.Context, op string, statement func(Flavor) string) error {
	return s.execFlavoredWithin(ctx, s.queryTimeout, op, statement)
}

// execFlavoredWithin is execFlavored under another bound than the query timeout.
func (s *Server) execFlavoredWithin(ctx context.Context, bound time.Duration, op string, statement func(Flavor) string) error {
	f, err := s.flavorFor(ctx, op)
	if err != nil {
		return err
	}
	return s.execWithin(ctx, bound, op, statement(f))
}

func (s *Server) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var me *Error
	if errors.As(err, &me) {
		return err
	}
	return &Error{Server: s.addr, Op: op, Err: err}
}

// exec runs one statement under the query timeout.
func (s *Server) exec(ctx context.Context, op, query string, args ...any) error {
	return s.execWithin(ctx, s.queryTimeout, op, query, args...)
}

// execWithin runs one statement under bound.
func (s *Server) execWithin(ctx context.Context, bound time.Duration, op, query string, args ...any) error {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	_, err := s.db.ExecContext(ctx, query, args...)
	return s.wrap(op, err)
}

// conn runs fn on one connection, so that session settings (sql_log_bin) hold for
// every statement fn runs.
func (s *Server) conn(ctx context.Context, op string, fn func(ctx context.Context, c *sql.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	c, err := s.db.Conn(ctx)
	if err != nil {
		return s.wrap(op, err)
	}
	defer c.Close()
	return s.wrap(op, fn(ctx, c))
}

// Ping checks the server answers.
func (s *Server) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	return s.wrap("ping", s.db.PingContext(ctx))
}

// State reads what the controller needs to know of a server.
func (s *Server) State(ctx context.Context) (State, error) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	f, err := s.flavorFor(ctx, "read state")
	if err != nil {
		return State{}, err
	}
	st, err := f.ReadState(ctx, s.db)
	return st, s.wrap("read state", err)
}

// ReadOnly reads @@global.read_only: any account may, so the sidecar's backup user can.
func (s *Server) ReadOnly(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	var on bool
	err := s.db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&on)
	return on, s.wrap("read read_only", err)
}

// SetReadOnly switches read_only (on MySQL also super_read_only).
func (s *Server) SetReadOnly(ctx context.Context, readOnly bool) error {
	return s.execFlavored(ctx, "set read_only", func(f Flavor) string { return f.SetReadOnlySQL(readOnly) })
}

// Source is where a replica replicates from.
type Source struct {
	Host     string
	Port     int
	User     string
	Password string
}

// ChangeSource points the server at src, by GTID (the replica's own position). The
// replica must be stopped.
func (s *Server) ChangeSource(ctx context.Context, src Source) error {
	f, err := s.flavorFor(ctx, "change source to "+src.Host)
	if err != nil {
		return err
	}
	query, args := f.ChangeSourceSQL(src)
	return s.exec(ctx, "change source to "+src.Host, query, args...)
}

// StartReplica starts the replication threads.
func (s *Server) StartReplica(ctx context.Context) error {
	return s.execFlavored(ctx, "start replica", Flavor.StartReplicaSQL)
}

// StopReplicaBound bounds STOP REPLICA [IO_THREAD] instead of the query timeout when
// it is longer: a replica whose source vanished (packets dropped) may be in an
// attempt to connect again, which holds its IO thread up to replica_net_timeout (4 s
// in replicant's fragment), and MySQL looks at a stopping thread every 2 s. Measured
// (mysql/stall_test.go): MySQL 9.7 about 2 s, MariaDB about 1 s.
const StopReplicaBound = 5 * time.Second

// StopReplicaIO stops receiving from the source; the SQL thread goes on applying
// what is already in the relay log.
func (s *Server) StopReplicaIO(ctx context.Context) error {
	return s.stopReplica(ctx, "stop replica IO thread", Flavor.StopReplicaIOSQL)
}

// stopReplica runs a STOP statement under StopReplicaBound (see there).
func (s *Server) stopReplica(ctx context.Context, op string, statement func(Flavor) string) error {
	return s.execFlavoredWithin(ctx, max(s.queryTimeout, StopReplicaBound), op, statement)
}

// SetSemiSyncMaster turns the master side of semi-synchronous replication on or off:
// on, a commit returns to its client only once a replica has the transaction.
func (s *Server) SetSemiSyncMaster(ctx context.Context, on bool) error {
	return s.execFlavored(ctx, "set semi-sync master", func(f Flavor) string { return f.SemiSyncMasterSQL(on) })
}

// StopReplica stops the replication threads (a no-op when they are stopped).
func (s *Server) StopReplica(ctx context.Context) error {
	return s.stopReplica(ctx, "stop replica", Flavor.StopReplicaSQL)
}

// SetReplicaPos sets the GTID position replication starts from (@@gtid_slave_pos),
// e.g. the position a clone ends at. Replication must be stopped.
func (s *Server) SetReplicaPos(ctx context.Context, pos GTIDSet) error {
	f, err := s.flavorFor(ctx, "set replica position")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	return s.wrap("set replica position "+pos.Position().String(), f.SetReplicaPos(ctx, s.db, pos))
}

// ResetReplica stops replication and forgets every replica setting (source, relay
// logs): what a promoted master must do, so it does not keep stale settings.
func (s *Server) ResetReplica(ctx context.Context) error {
	if err := s.StopReplica(ctx); err != nil {
		return err
	}
	return s.execFlavored(ctx, "reset replica", Flavor.ResetReplicaSQL)
}

// ErrWaitTimeout is returned by WaitForGTID when the position is not reached in time.
var ErrWaitTimeout = errors.New("GTID position not reached before the timeout")

// WaitForGTID waits until the server has applied every transaction of pos (a position:
// one GTID per domain, or a set, of which the highest of each domain counts).
func (s *Server) WaitForGTID(ctx context.Context, pos GTIDSet, timeout time.Duration) error {
	f, err := s.flavorFor(ctx, "wait for GTID")
	if err != nil {
		return err
	}
	// In steps of at most the query timeout: the connection's read timeout (a little
	// above it) would otherwise cut a long wait off as a broken connection.
	deadline := time.Now().Add(timeout)
	for {
		step := min(time.Until(deadline), s.queryTimeout)
		if step < 0 {
			step = 0
		}
		stepCtx, cancel := context.WithTimeout(ctx, step+s.queryTimeout)
		err = f.WaitForGTID(stepCtx, s.db, pos, step)
		cancel()
		if !errors.Is(err, ErrWaitTimeout) || !time.Now().Before(deadline) || ctx.Err() != nil {
			return s.wrap("wait for GTID "+pos.Position().String(), err)
		}
	}
}

// User is one of replicant's own accounts.
type User struct {
	Name     string
	Password string
	Role     UserRole
}

// UserRole says what an account may do; the flavor turns it into least privileges.
type UserRole int

const (
	// RoleReplication: replicas connect with it (REPLICATION SLAVE).
	RoleReplication UserRole = iota
	// RoleBackup: mariadb-backup runs with it in the sidecar.
	RoleBackup
	// RoleAdmin: the controller probes, fences, promotes and writes the heartbeat.
	RoleAdmin
)

// EnsureUsers creates the users (host '%') or resets their password and privileges
// to what their role needs. Run it only on the writable master: the statements are
// written to the binlog so that every replica gets the same accounts.
func (s *Server) EnsureUsers(ctx context.Context, users []User) error {
	f, err := s.flavorFor(ctx, "ensure users")
	if err != nil {
		return err
	}
	return s.conn(ctx, "ensure users", func(ctx context.Context, c *sql.Conn) (err error) {
		restore, err := f.OpenForProvisioning(ctx, c)
		if err != nil {
			return err
		}
		defer func() {
			// The fence goes back even when a statement failed (a fresh context: ctx
			// may be what ended).
			rctx, cancel := context.WithTimeout(context.Background(), s.queryTimeout)
			defer cancel()
			if rerr := restore(rctx); rerr != nil && err == nil {
				err = fmt.Errorf("restore the fence: %w", rerr)
			}
		}()
		for _, u := range users {
			for _, stmt := range f.UserSQL(u) {
				if _, err := c.ExecContext(ctx, stmt.Query, stmt.Args...); err != nil {
					return fmt.Errorf("user %s: %w", u.Name, err)
				}
			}
		}
		return nil
	})
}

// Statement is SQL with its placeholder values.
type Statement struct {
	Query string
	Args  []any
}

// HeartbeatSchema is the database replicant keeps its heartbeat table in.
const HeartbeatSchema = "replicant"

// WriteHeartbeat records now on the master; replicas measure their lag from it. Call
// it only on the server replicant made writable. The schema is created the first
// time only (a CREATE ... IF NOT EXISTS would still add a transaction every time).
func (s *Server) WriteHeartbeat(ctx context.Context) error {
	const insert = "INSERT INTO " + HeartbeatSchema + ".heartbeat (id, server_id, ts) VALUES (1, @@server_id, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE server_id = @@server_id, ts = UTC_TIMESTAMP(6)"
	err := s.exec(ctx, "write heartbeat", insert)
	var me *mysql.MySQLError
	if !errors.As(err, &me) || (me.Number != 1146 && me.Number != 1049) { // no such table, no such database
		return err
	}
	return s.conn(ctx, "create heartbeat table", func(ctx context.Context, c *sql.Conn) error {
		for _, q := range []string{
			"CREATE DATABASE IF NOT EXISTS " + HeartbeatSchema,
			"CREATE TABLE IF NOT EXISTS " + HeartbeatSchema + ".heartbeat (id TINYINT UNSIGNED PRIMARY KEY, server_id INT UNSIGNED NOT NULL, ts DATETIME(6) NOT NULL) ENGINE=InnoDB",
			insert,
		} {
			if _, err := c.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
}

// ErrNoHeartbeat is returned by HeartbeatLag before the first heartbeat arrived.
var ErrNoHeartbeat = errors.New("no heartbeat replicated yet")

// HeartbeatLag is how old the newest heartbeat the server has applied is: the
// replica's lag, measured end to end, without trusting Seconds_Behind_Master. It
// assumes the servers' clocks agree (NTP on the nodes).
func (s *Server) HeartbeatLag(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	var micros sql.NullInt64
	err := s.db.QueryRowContext(ctx, "SELECT TIMESTAMPDIFF(MICROSECOND, ts, UTC_TIMESTAMP(6)) FROM "+HeartbeatSchema+".heartbeat WHERE id = 1").Scan(&micros)
	var me *mysql.MySQLError
	if errors.Is(err, sql.ErrNoRows) || (errors.As(err, &me) && (me.Number == 1146 || me.Number == 1049)) {
		return 0, s.wrap("heartbeat lag", ErrNoHeartbeat)
	}
	if err != nil {
		return 0, s.wrap("heartbeat lag", err)
	}
	if micros.Int64 < 0 {
		return 0, nil
	}
	return time.Duration(micros.Int64) * time.Microsecond, nil
}

// KillClientSessions kills every client session except the caller's own, the
// server's own threads, and replication (replicas' dump threads, this server's
// replica threads). A killed session that was waiting in COMMIT for a semi-sync
// acknowledgement gets an error, never success. It returns how many it killed.
func (s *Server) KillClientSessions(ctx context.Context) (int, error) {
	killed := 0
	var denied error
	err := s.conn(ctx, "kill client sessions", func(ctx context.Context, c *sql.Conn) error {
		rows, err := c.QueryContext(ctx, `SELECT ID FROM information_schema.PROCESSLIST
			WHERE ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user')
			AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker', 'Connect Out')`)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			_, err := c.ExecContext(ctx, "KILL CONNECTION ?", id)
			var me *mysql.MySQLError
			if errors.As(err, &me) && me.Number == 1094 { // ER_NO_SUCH_THREAD: it ended meanwhile
				continue
			}
			if errors.As(err, &me) && me.Number == 1095 { // ER_KILL_DENIED_ERROR
				// Another account's session this one may not end (on MySQL, one with
				// SYSTEM_USER): end the others still, and say so (the first suffices).
				if denied == nil {
					denied = fmt.Errorf("session %d: %w", id, err)
				}
				continue
			}
			if err != nil {
				return err
			}
			killed++
		}
		return denied
	})
	return killed, err
}

// ReleaseWaitingCommits is a fence's step after killing client sessions: it ends the
// commits that still wait for a semi-sync acknowledgement, without any client being
// told they succeeded, so that SET GLOBAL read_only gets through at once. Nothing to
// do on MariaDB; on MySQL see MySQL.ReleaseWaitingCommits (which fences too).
func (s *Server) ReleaseWaitingCommits(ctx context.Context) error {
	f, err := s.flavorFor(ctx, "release waiting commits")
	if err != nil {
		return err
	}
	return f.ReleaseWaitingCommits(ctx, s)
}

// BinlogFile is one of the server's binlog files, as SHOW BINARY LOGS lists it.
type BinlogFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// Binlogs lists the server's binlog files, oldest first (the last is the one being
// written), and the directory they are in (from @@log_bin_basename).
func (s *Server) Binlogs(ctx context.Context) (files []BinlogFile, dir string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	var basename sql.NullString
	if err := s.db.QueryRowContext(ctx, "SELECT @@log_bin_basename").Scan(&basename); err != nil {
		return nil, "", s.wrap("binlog basename", err)
	}
	if !basename.Valid || basename.String == "" {
		return nil, "", s.wrap("binlog basename", errors.New("the binary log is off (log_bin)"))
	}
	rows, err := s.db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, "", s.wrap("show binary logs", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, "", s.wrap("show binary logs", err)
	}
	for rows.Next() {
		var f BinlogFile
		dest := []any{&f.Name, &f.Size}
		for range cols[2:] { // MySQL adds Encrypted
			dest = append(dest, new(sql.RawBytes))
		}
		if err := rows.Scan(dest...); err != nil {
			return nil, "", s.wrap("show binary logs", err)
		}
		files = append(files, f)
	}
	return files, filepath.Dir(basename.String), s.wrap("show binary logs", rows.Err())
}

// FlushBinlogs closes the binlog file being written and opens the next (RELOAD).
func (s *Server) FlushBinlogs(ctx context.Context) error {
	return s.exec(ctx, "flush binary logs", "FLUSH BINARY LOGS")
}
