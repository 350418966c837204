package backup

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/replicant-dev/replicant/mysql"
)

// Retention is how many committed backups to keep: the newest Count, and any younger
// than MaxAge. With both set a backup goes only when it is beyond the count and older
// than the age; the newest is always kept.
type Retention struct {
	Count  int
	MaxAge time.Duration
}

// RetentionHelp says what ParseRetention accepts.
const RetentionHelp = `a count ("7"), an age in days or hours ("30d", "36h"), or both ("7,30d": a backup goes only when it is beyond the count and older than the age)`

// ParseRetention reads replicant.dev/backup-retention.
func ParseRetention(v string) (Retention, error) {
	var r Retention
	parts := strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' })
	if len(parts) == 0 || len(parts) > 2 {
		return r, fmt.Errorf("%q is not %s", v, RetentionHelp)
	}
	for _, p := range parts {
		switch {
		case strings.HasSuffix(p, "d") || strings.HasSuffix(p, "h"):
			n, err := strconv.Atoi(p[:len(p)-1])
			if err != nil || n <= 0 || r.MaxAge != 0 {
				return Retention{}, fmt.Errorf("%q is not %s", v, RetentionHelp)
			}
			unit := time.Hour
			if p[len(p)-1] == 'd' {
				unit = 24 * time.Hour
			}
			r.MaxAge = time.Duration(n) * unit
		default:
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || r.Count != 0 {
				return Retention{}, fmt.Errorf("%q is not %s", v, RetentionHelp)
			}
			r.Count = n
		}
	}
	return r, nil
}

func (r Retention) String() string {
	var parts []string
	if r.Count > 0 {
		parts = append(parts, strconv.Itoa(r.Count))
	}
	if r.MaxAge > 0 {
		if r.MaxAge%(24*time.Hour) == 0 {
			parts = append(parts, fmt.Sprintf("%dd", r.MaxAge/(24*time.Hour)))
		} else {
			parts = append(parts, fmt.Sprintf("%dh", r.MaxAge/time.Hour))
		}
	}
	return strings.Join(parts, ",")
}

// Expired picks, from committed backups oldest first, those the policy lets go.
func (r Retention) Expired(backups []Manifest, now time.Time) []Manifest {
	if r.Count == 0 && r.MaxAge == 0 {
		return nil
	}
	var out []Manifest
	for i, m := range backups {
		newer := len(backups) - 1 - i // committed backups newer than this one
		if newer == 0 {
			break // the newest is always kept
		}
		beyondCount := r.Count == 0 || newer >= r.Count
		tooOld := r.MaxAge == 0 || now.Sub(m.Start) > r.MaxAge
		if beyondCount && tooOld {
			out = append(out, m)
		}
	}
	return out
}

// Prune deletes the committed backups the policy lets go (manifest first, so a
// backup half deleted is no longer listed) and what unfinished backups left behind
// that are older than the newest committed one (a backup still being written is
// newer). It returns the names it deleted.
func (c *Cluster) Prune(ctx context.Context, r Retention, now time.Time) ([]string, error) {
	all, err := c.List(ctx)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, m := range r.Expired(all, now) {
		if err := c.bucket.Delete(ctx, m.Name+"/"+ManifestObject); err != nil {
			return deleted, fmt.Errorf("delete %s: %s", c.where.Child(m.Name, ManifestObject), cleanError(err))
		}
		if err := c.deleteDir(ctx, m.Name); err != nil {
			return deleted, err
		}
		deleted = append(deleted, m.Name)
	}
	if len(all) == 0 {
		return deleted, nil
	}
	if err := c.pruneBinlogs(ctx, all, deleted); err != nil {
		return deleted, err
	}
	newest := all[len(all)-1].Name
	committed := map[string]bool{}
	for _, m := range all {
		committed[m.Name] = true
	}
	it := c.bucket.List(&blob.ListOptions{Delimiter: "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return deleted, fmt.Errorf("list %s: %s", c.where, cleanError(err))
		}
		name := strings.TrimSuffix(obj.Key, "/")
		if !obj.IsDir || committed[name] || name >= newest || name == BinlogsDir {
			continue
		}
		if err := c.deleteDir(ctx, name); err != nil {
			return deleted, err
		}
		deleted = append(deleted, name)
	}
	return deleted, nil
}

func (c *Cluster) deleteDir(ctx context.Context, name string) error {
	it := c.bucket.List(&blob.ListOptions{Prefix: name + "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("list %s: %s", c.where.Child(name), cleanError(err))
		}
		if err := c.bucket.Delete(ctx, obj.Key); err != nil {
			return fmt.Errorf("delete %s: %s", c.where.Child(obj.Key), cleanError(err))
		}
	}
}

// pruneBinlogs deletes the archived binlogs no kept backup needs: those whose every
// transaction the oldest kept backup holds and that ended before it started (record
// first, so a file half deleted is no longer listed).
func (c *Cluster) pruneBinlogs(ctx context.Context, all []Manifest, deletedBackups []string) error {
	gone := map[string]bool{}
	for _, name := range deletedBackups {
		gone[name] = true
	}
	var oldest *Manifest
	for i := range all {
		if !gone[all[i].Name] {
			oldest = &all[i]
			break
		}
	}
	if oldest == nil {
		return nil
	}
	held, err := mysql.ParseGTIDSet(oldest.GTID)
	if err != nil {
		return nil // an unreadable position: keep everything
	}
	binlogs, err := c.Binlogs(ctx)
	if err != nil {
		return err
	}
	for _, b := range binlogs {
		if !held.Position().Reaches(b.End.Position()) || !b.LastTime.Before(oldest.Start) {
			continue
		}
		for _, key := range []string{b.Key + ".json", b.Key + ".zst"} {
			if err := c.bucket.Delete(ctx, key); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
				return fmt.Errorf("delete %s: %s", c.where.Child(key), cleanError(err))
			}
		}
	}
	return nil
}
