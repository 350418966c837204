package sidecar

import (
	"archive/tar"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	gomysql "github.com/go-sql-driver/mysql"
)

// scratchPrefix names a MySQL backup's copy in the scratch directory; whatever has it
// when a backup starts was left by one interrupted and is removed.
const scratchPrefix = "replicant-backup-"

// streamCloneBackup is /xbackup on MySQL, with what MySQL itself ships: the server
// copies itself with CLONE LOCAL DATA DIRECTORY into the scratch directory (a
// consistent physical copy, taken while it serves; DDL waits for it), the copy is
// streamed as a tar archive, and removed. Its GTID set is read by a private start of
// the copy (checkCopy).
func (s *Server) streamCloneBackup(ctx context.Context, w http.ResponseWriter, log logr.Logger) (int64, error) {
	if s.cfg.ScratchDir == "" {
		return 0, errors.New("no scratch directory for the server's local clone (--scratch-dir)")
	}
	leftovers, _ := filepath.Glob(filepath.Join(s.cfg.ScratchDir, scratchPrefix+"*"))
	for _, l := range leftovers {
		log.Info("removing an interrupted backup's copy", "path", l)
		if err := os.RemoveAll(l); err != nil {
			return 0, fmt.Errorf("remove an interrupted backup's copy: %w", err)
		}
	}
	work, err := os.MkdirTemp(s.cfg.ScratchDir, scratchPrefix)
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o777); err != nil { // the server's user creates the copy in it
		return 0, err
	}
	dir := filepath.Join(work, "data")

	start := time.Now()
	info, err := s.cloneLocal(ctx, dir)
	if err != nil {
		return 0, err
	}
	cloned := time.Now()
	if info.GTID, err = s.checkCopy(ctx, work, dir); err != nil {
		return 0, err
	}
	log.Info("local clone made and checked; streaming it", "cloneSeconds", cloned.Sub(start).Seconds(),
		"checkSeconds", time.Since(cloned).Seconds(), "gtid", info.GTID)
	pr, pw := io.Pipe()
	written := make(chan struct{})
	go func() { defer close(written); pw.CloseWithError(WriteTar(pw, dir)) }()
	startStream(w, FormatTar)
	n, err := copyFlushing(w, pr)
	// A copy that failed stops the writer; the copy is removed only once it stopped.
	pr.CloseWithError(errors.New("the stream to the client ended"))
	<-written
	if err != nil {
		if ctx.Err() != nil {
			return n, fmt.Errorf("client went away after %d bytes", n)
		}
		return n, fmt.Errorf("stream to client: %w", err)
	}
	w.Header().Set(BackupGTIDTrailer, info.GTID)
	w.Header().Set(BackupVersionTrailer, info.ServerVersion)
	return n, nil
}

// cloneLocal has the server clone itself into dir (which must not exist).
// It runs on a connection of its own without a read timeout (a clone takes as long as
// the data needs); a client going away kills the statement, which removes the copy.
func (s *Server) cloneLocal(ctx context.Context, dir string) (BackupInfo, error) {
	c := gomysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr = s.cfg.BackupUser, s.cfg.BackupPassword, "tcp", s.cfg.ServerAddr
	c.Timeout = 5 * time.Second
	c.InterpolateParams = true
	connector, err := gomysql.NewConnector(c)
	if err != nil {
		return BackupInfo{}, err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("connect to the server: %w", err)
	}
	defer conn.Close()
	var id int64
	if err := conn.QueryRowContext(ctx, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
		return BackupInfo{}, err
	}
	// The driver only drops the connection when ctx ends; the server would go on
	// cloning. The statement is killed (an account may kill its own sessions), and the
	// copy is removed only once the session is gone: the server writes it until then.
	done, killed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		db.ExecContext(kctx, fmt.Sprintf("KILL QUERY %d", id))
		for kctx.Err() == nil {
			var left int
			if err := db.QueryRowContext(kctx, "SELECT COUNT(*) FROM information_schema.processlist WHERE id = ?", id).Scan(&left); err == nil && left == 0 {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	_, err = conn.ExecContext(ctx, "CLONE LOCAL DATA DIRECTORY = ?", dir)
	close(done)
	<-killed
	if err != nil {
		if ctx.Err() != nil {
			return BackupInfo{}, fmt.Errorf("client went away during the local clone: %w", ctx.Err())
		}
		return BackupInfo{}, fmt.Errorf("CLONE LOCAL DATA DIRECTORY: %w", err)
	}
	var state string
	if err := conn.QueryRowContext(ctx, "SELECT STATE FROM performance_schema.clone_status").Scan(&state); err != nil {
		return BackupInfo{}, fmt.Errorf("read the local clone's outcome: %w", err)
	}
	if state != "Completed" {
		return BackupInfo{}, fmt.Errorf("the local clone ended in state %q", state)
	}
	info := BackupInfo{Format: FormatTar}
	if err := conn.QueryRowContext(ctx, "SELECT @@version").Scan(&info.ServerVersion); err != nil {
		return BackupInfo{}, err
	}
	return info, nil
}

// checkCopy starts a private server on the copy (socket only, no grant tables, no
// binlog, no replication), clears its replica settings, and reads the GTID set the
// copy holds: CLONE LOCAL does not report it, and a copy that does not
// start is not a backup. The server image's mysqld is at hand: the sidecar runs in it.
func (s *Server) checkCopy(ctx context.Context, work, dir string) (string, error) {
	private, cleanup, err := newPrivateServer(CloneInstanceConfig{Mysqld: s.cfg.Mysqld, MysqldOptions: s.cfg.MysqldOptions}, work, dir)
	if err != nil {
		return "", err
	}
	defer cleanup()
	// A small footprint beside the server: the check reads one variable.
	// (The smallest redo log, too: the files a start makes travel with the copy.)
	if err := private.start(ctx, "--skip-grant-tables", "--disable-log-bin", "--performance-schema=OFF",
		"--innodb-buffer-pool-size=16M", "--innodb-redo-log-capacity=8M"); err != nil {
		return "", fmt.Errorf("the local clone does not start: %w", err)
	}
	defer private.stop()
	// A backup carries no replica settings of the server it was taken from (most are
	// taken from a replica): a cluster restored from it never points at this one.
	db, err := private.open(30 * time.Second)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "RESET REPLICA ALL"); err != nil {
		return "", fmt.Errorf("clear the copy's replica settings: %w", err)
	}
	return private.executed(ctx)
}

// WriteTar writes the directory tree at dir as a tar archive, paths relative to it.
// Only directories and regular files are archived (a datadir holds nothing else).
func WriteTar(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() && !info.IsDir() {
			return fmt.Errorf("%s: neither a file nor a directory", p)
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		hdr.Uname, hdr.Gname = "", ""
		if info.IsDir() {
			hdr.Name += "/"
			return tw.WriteHeader(hdr)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// Exactly the size announced: a file that changed size would corrupt the archive.
		if _, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// ExtractTar unpacks a tar archive into dir (which exists), refusing any entry that
// would land outside it and anything but directories and regular files.
func ExtractTar(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	buf := make([]byte, 1<<20)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.FromSlash(strings.TrimSuffix(hdr.Name, "/"))
		if !filepath.IsLocal(name) {
			return fmt.Errorf("archive entry %q: not a path inside the archive", hdr.Name)
		}
		target := filepath.Join(dir, name)
		mode := fs.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
				return err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode|0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(f, tr, buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
		default:
			return fmt.Errorf("archive entry %q: type %q is neither a file nor a directory", hdr.Name, hdr.Typeflag)
		}
	}
}
