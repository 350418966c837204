package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// ErrDonorBusy: the donor is streaming another backup (a clone or a backup) and
// serves one at a time; try again later.
var ErrDonorBusy = errors.New("the donor is already streaming a backup (one at a time)")

// BackupStream is a donor's /xbackup being read. Read gives the xbstream bytes; once
// Read has returned io.EOF, Finish says whether the donor completed the backup (a
// stream cut short, whatever its bytes look like, is not one).
type BackupStream struct {
	Source      string
	resp        *http.Response
	counter     *countingReader
	cancel      context.CancelFunc
	idleFired   func() bool
	idleTimeout time.Duration
}

// RequestBackup asks the sidecar at source (http://host:8080) for a backup. The
// stream fails when the donor sends nothing for idleTimeout: a donor stuck on a lock
// must not hold the reader, nor the donor's single backup slot, for ever (closing the
// stream stops the donor's backup).
func RequestBackup(ctx context.Context, source, user, password string, idleTimeout time.Duration) (*BackupStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(source, "/")+"/xbackup", nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := cloneClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s: %w", source, ErrDonorBusy)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("%s answered %s: %s", source, resp.Status, strings.TrimSpace(string(body)))
	}
	s := &BackupStream{Source: source, resp: resp, counter: &countingReader{r: resp.Body}, cancel: cancel, idleTimeout: idleTimeout}
	s.idleFired = watchIdle(s.counter, idleTimeout, cancel)
	return s, nil
}

func (s *BackupStream) Read(p []byte) (int, error) {
	n, err := s.counter.Read(p)
	if err != nil && err != io.EOF && s.idleFired() {
		err = fmt.Errorf("%s sent nothing for %v: given up (its backup is stopped)", s.Source, s.idleTimeout)
	}
	return n, err
}

// Bytes is how much has been read so far.
func (s *BackupStream) Bytes() int64 { return s.counter.n.Load() }

// Finish, after Read returned io.EOF, reports the donor's trailers: an error unless it
// finished the backup.
func (s *BackupStream) Finish() (BackupInfo, error) {
	if status := s.resp.Trailer.Get(BackupStatusTrailer); status != "ok" {
		return BackupInfo{}, fmt.Errorf("%s did not finish the backup (status %q)", s.Source, status)
	}
	return BackupInfo{GTID: s.resp.Trailer.Get(BackupGTIDTrailer), ServerVersion: s.resp.Trailer.Get(BackupVersionTrailer),
		Format: s.Format()}, nil
}

// Format is the stream's format, from its header (FormatXbstream when it has none).
func (s *BackupStream) Format() string {
	if f := s.resp.Header.Get(BackupFormatHeader); f != "" {
		return f
	}
	return FormatXbstream
}

// Close ends the request (the donor's backup stops if it has not finished).
func (s *BackupStream) Close() error {
	s.idleFired()
	s.cancel()
	return s.resp.Body.Close()
}

// DonorAddress asks the sidecar at base where its server takes a MySQL clone
// (GET /donor): one server, so that every connection of the clone reaches the same
// donor even when base is a Service with several pods behind it.
func DonorAddress(ctx context.Context, base string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/donor", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("ask %s for its server's address: %w", base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("ask %s for its server's address: %s %s %v", base, resp.Status, strings.TrimSpace(string(body)), err)
	}
	addr := strings.TrimSpace(string(body))
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("%s names its server %q: %w", base, addr, err)
	}
	return addr, nil
}

// Answers reports whether a sidecar answers /readyz at base (its server is up).
func Answers(ctx context.Context, base string, timeout time.Duration) bool {
	if base == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
