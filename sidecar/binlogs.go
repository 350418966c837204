package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/replicant-dev/replicant/mysql"
)

// BinlogListing is what GET /binlogs answers: the server's binlog files, oldest first,
// each summarised; the last one is being written (Summary.Closed is false).
type BinlogListing struct {
	Files []ListedBinlog `json:"files"`
	// Flushed: the request asked for a flush and the open file held transactions, so
	// it was closed and is in Files as closed.
	Flushed bool `json:"flushed"`
}

// ListedBinlog is one file of a BinlogListing.
type ListedBinlog struct {
	mysql.BinlogFile
	Summary mysql.BinlogSummary `json:"summary"`
}

// binlogSummaries remembers the summaries of closed files: they never change, and
// reading a large file again at every archiving run would cost a disk's worth of
// reads.
type binlogSummaries struct {
	mu     sync.Mutex
	closed map[string]ListedBinlog
}

// listBinlogs lists and summarises the server's binlogs; with flush, it first closes
// the open file when that holds a transaction (so archiving stays within its bound
// without making empty files).
func (s *Server) listBinlogs(ctx context.Context, flush bool) (BinlogListing, error) {
	var out BinlogListing
	files, dir, err := s.db.Binlogs(ctx)
	if err != nil {
		return out, err
	}
	if flush && len(files) > 0 {
		open, err := s.summarise(dir, files[len(files)-1])
		if err != nil {
			return out, err
		}
		if open.Summary.Transactions > 0 {
			if err := s.db.FlushBinlogs(ctx); err != nil {
				return out, err
			}
			out.Flushed = true
			if files, dir, err = s.db.Binlogs(ctx); err != nil {
				return out, err
			}
		}
	}
	s.binlogSummaries.mu.Lock()
	known := s.binlogSummaries.closed
	s.binlogSummaries.closed = map[string]ListedBinlog{} // forget purged files
	s.binlogSummaries.mu.Unlock()
	for _, f := range files {
		listed, ok := known[f.Name]
		if !ok || listed.Size != f.Size {
			if listed, err = s.summarise(dir, f); err != nil {
				return out, err
			}
		}
		if listed.Summary.Closed {
			s.binlogSummaries.mu.Lock()
			s.binlogSummaries.closed[f.Name] = listed
			s.binlogSummaries.mu.Unlock()
		}
		out.Files = append(out.Files, listed)
	}
	return out, nil
}

func (s *Server) summarise(dir string, f mysql.BinlogFile) (ListedBinlog, error) {
	file, err := os.Open(filepath.Join(dir, f.Name))
	if err != nil {
		return ListedBinlog{}, err
	}
	defer file.Close()
	sum, err := mysql.ReadBinlogSummary(io.LimitReader(file, f.Size))
	if err != nil {
		return ListedBinlog{}, fmt.Errorf("%s: %w", f.Name, err)
	}
	return ListedBinlog{BinlogFile: f, Summary: sum}, nil
}

// binlogList serves GET /binlogs[?flush=1].
func (s *Server) binlogList(w http.ResponseWriter, r *http.Request) {
	if !s.authorizedOrRefuse(w, r) {
		return
	}
	listing, err := s.listBinlogs(r.Context(), r.URL.Query().Get("flush") == "1")
	if err != nil {
		s.cfg.Log.Error(err, "listing binlogs")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(listing)
}

// binlogFile serves GET /binlogs/{name}: one file the server lists, whole (a file
// being written is served up to its size when listed).
func (s *Server) binlogFile(w http.ResponseWriter, r *http.Request) {
	if !s.authorizedOrRefuse(w, r) {
		return
	}
	name := r.PathValue("name")
	files, dir, err := s.db.Binlogs(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	for _, f := range files {
		if f.Name != name { // only listed names: nothing else of the datadir is served
			continue
		}
		file, err := os.Open(filepath.Join(dir, f.Name))
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer file.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(f.Size, 10))
		io.CopyN(w, file, f.Size)
		return
	}
	http.Error(w, fmt.Sprintf("no binlog %q on this server", name), http.StatusNotFound)
}

func (s *Server) authorizedOrRefuse(w http.ResponseWriter, r *http.Request) bool {
	if s.authorized(r) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="replicant"`)
	w.WriteHeader(http.StatusUnauthorized)
	return false
}

// ListBinlogs asks the sidecar at source for its server's binlogs (flush: close the
// open file first if it holds transactions).
func ListBinlogs(ctx context.Context, source, user, password string, flush bool) (BinlogListing, error) {
	var listing BinlogListing
	u := strings.TrimRight(source, "/") + "/binlogs"
	if flush {
		u += "?" + url.Values{"flush": {"1"}}.Encode()
	}
	resp, err := sidecarGet(ctx, u, user, password)
	if err != nil {
		return listing, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&listing); err != nil {
		return listing, fmt.Errorf("%s: %w", u, err)
	}
	return listing, nil
}

// OpenBinlog streams one binlog file from the sidecar at source.
func OpenBinlog(ctx context.Context, source, user, password, name string) (io.ReadCloser, error) {
	resp, err := sidecarGet(ctx, strings.TrimRight(source, "/")+"/binlogs/"+url.PathEscape(name), user, password)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func sidecarGet(ctx context.Context, u, user, password string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := cloneClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	return resp, nil
}
