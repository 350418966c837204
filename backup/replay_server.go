package backup

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// replayServer is the private server a replay runs on the restored datadir (either
// flavor): started with its options, waited for on its socket, shut down at the end
// and killed if the replay stops half way.
type replayServer struct {
	exited  chan error
	stopped bool
	kill    func() error
	private string // its directory: socket, pid file, error log
}

// startReplayServer starts opts.Server with args (and opts.ServerOptions) and returns
// it with a connection pool of one through its socket as user (password may be empty),
// once it answers (within opts.StartTimeout).
func startReplayServer(ctx context.Context, opts ReplayOptions, private string, args []string, user, password string) (*replayServer, *sql.DB, error) {
	cmd := opts.command(context.Background(), opts.Server, append(args, opts.ServerOptions...)...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s on the restored datadir: %w", opts.Server, err)
	}
	srv := &replayServer{exited: make(chan error, 1), kill: cmd.Process.Kill, private: private}
	go func() { srv.exited <- cmd.Wait() }()
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = user, password, "unix", srv.socket()
	cfg.Timeout = 5 * time.Second
	// The driver would log the connection it finds closed after SHUTDOWN; that end is
	// expected, and errors come back as errors.
	cfg.Logger = log.New(io.Discard, "", 0)
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		srv.close()
		return nil, nil, err
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	fail := func(err error) (*replayServer, *sql.DB, error) {
		db.Close()
		srv.close()
		return nil, nil, err
	}
	for deadline := time.Now().Add(opts.StartTimeout); ; {
		if err = db.PingContext(ctx); err == nil {
			return srv, db, nil
		}
		select {
		case werr := <-srv.exited:
			srv.stopped = true
			return fail(fmt.Errorf("the private server on the restored datadir stopped (%v): %s", werr, srv.errorLog()))
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("the private server on the restored datadir did not answer within %v: %v: %s", opts.StartTimeout, err, srv.errorLog()))
		}
	}
}

func (s *replayServer) socket() string { return filepath.Join(s.private, "mysqld.sock") }

// replayServerArgs are the options of a private server in directory private on
// datadir: a socket and no network, its own pid file and error log. Run as root, the
// server runs as the datadir's owner (neither server runs as root unless told), who
// is given private and the files it must read.
func replayServerArgs(private, datadir string, readByServer ...string) ([]string, error) {
	args := []string{"--no-defaults", "--datadir=" + datadir, "--socket=" + filepath.Join(private, "mysqld.sock"),
		"--skip-networking", "--pid-file=" + filepath.Join(private, "mysqld.pid"),
		"--log-error=" + filepath.Join(private, "error.log"), "--innodb-buffer-pool-size=256M"}
	if os.Getuid() != 0 {
		return args, nil
	}
	uid, gid := ownerIDs(datadir)
	for _, p := range append([]string{private}, readByServer...) {
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, err
		}
	}
	return append(args, "--user="+datadirOwner(datadir)), nil
}

func (s *replayServer) errorLog() string {
	data, _ := os.ReadFile(filepath.Join(s.private, "error.log"))
	return lastLines(string(data), 8)
}

// shutdown stops the server cleanly (SHUTDOWN, then its exit within 5 minutes).
func (s *replayServer) shutdown(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, "SHUTDOWN"); err != nil {
		return fmt.Errorf("stop the private server: %w", err)
	}
	select {
	case <-s.exited:
		s.stopped = true
		return nil
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("the private server did not stop: %s", s.errorLog())
	}
}

// close kills the server unless it stopped.
func (s *replayServer) close() {
	if !s.stopped {
		s.kill()
		<-s.exited
		s.stopped = true
	}
}
