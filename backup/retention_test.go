package backup_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/backup"
)

func TestParseRetention(t *testing.T) {
	for v, want := range map[string]backup.Retention{
		"7":      {Count: 7},
		"30d":    {MaxAge: 30 * 24 * time.Hour},
		"36h":    {MaxAge: 36 * time.Hour},
		"7,30d":  {Count: 7, MaxAge: 30 * 24 * time.Hour},
		"30d 7":  {Count: 7, MaxAge: 30 * 24 * time.Hour},
		"1,1h":   {Count: 1, MaxAge: time.Hour},
		"100,2d": {Count: 100, MaxAge: 48 * time.Hour},
	} {
		got, err := backup.ParseRetention(v)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v", v, got, err)
		}
	}
	for _, v := range []string{"", "0", "-1", "7,8", "30d,2h", "7x", "d", "1.5", "7,30d,2"} {
		if _, err := backup.ParseRetention(v); err == nil || !strings.Contains(err.Error(), "a count") {
			t.Errorf("%q accepted (%v)", v, err)
		}
	}
}

func TestRetentionNeverExpiresTheNewest(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var all []backup.Manifest
	for d := 10; d >= 0; d-- { // one a day, 10 days ago .. today, oldest first
		at := now.Add(-time.Duration(d) * 24 * time.Hour)
		all = append(all, backup.Manifest{Name: at.Format("20060102T150405Z"), Start: at})
	}
	names := func(ms []backup.Manifest) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name[:8])
		}
		return out
	}
	for _, tc := range []struct {
		policy string
		want   []string
	}{
		{"3", []string{"20261125", "20261126", "20261127", "20261128", "20261129", "20261130", "20261201", "20261202"}},
		{"5d", []string{"20261125", "20261126", "20261127", "20261128", "20261129"}},
		{"9,5d", []string{"20261125", "20261126"}},
		{"3,8d", []string{"20261125", "20261126"}},
		{"20", nil},
	} {
		r, _ := backup.ParseRetention(tc.policy)
		if got := names(r.Expired(all, now)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.policy, got, tc.want)
		}
	}
	// All older than the age: the newest stays all the same.
	r, _ := backup.ParseRetention("1h")
	if got := r.Expired(all, now.Add(30*24*time.Hour)); len(got) != len(all)-1 || got[len(got)-1].Name == all[len(all)-1].Name {
		t.Errorf("the newest expired: %v", names(got))
	}
}

// TestPruneDeletesWhatThePolicyLetsGo, in a real (file) bucket: expired committed
// backups go entirely; an unfinished backup older than the newest committed one goes;
// one newer (still being written) stays.
func TestPruneDeletesWhatThePolicyLetsGo(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	put := func(name string, committed bool) {
		d := filepath.Join(dir, "default", "db", name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, backup.DataObject), []byte("data"), 0o644)
		if committed {
			at, _ := time.Parse("20060102T150405Z", name)
			m, _ := json.Marshal(backup.Manifest{Name: name, Start: at})
			os.WriteFile(filepath.Join(d, backup.ManifestObject), m, 0o644)
		}
	}
	put("20261201T030000Z", true)
	put("20261202T030000Z", false) // failed
	put("20261203T030000Z", true)
	put("20261204T030000Z", true)
	put("20261205T030000Z", true)
	put("20261205T110000Z", false) // being written
	c, err := backup.OpenCluster(ctx, "file://"+dir, "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deleted, err := c.Prune(ctx, backup.Retention{Count: 2}, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"20261201T030000Z", "20261203T030000Z", "20261202T030000Z"}; !reflect.DeepEqual(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
	list, _ := c.List(ctx)
	if len(list) != 2 || list[0].Name != "20261204T030000Z" || list[1].Name != "20261205T030000Z" {
		t.Errorf("left %+v", list)
	}
	// What is left on disk (a file bucket may keep empty directories).
	var left []string
	filepath.Walk(filepath.Join(dir, "default", "db"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(filepath.Join(dir, "default", "db"), p)
			left = append(left, rel)
		}
		return nil
	})
	want := []string{"20261204T030000Z/backup.xbstream.zst", "20261204T030000Z/manifest.json",
		"20261205T030000Z/backup.xbstream.zst", "20261205T030000Z/manifest.json", "20261205T110000Z/backup.xbstream.zst"}
	if !reflect.DeepEqual(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
