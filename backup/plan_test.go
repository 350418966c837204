package backup

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
)

var planEpoch = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// archived is a record of a file of server, holding the transactions after start up
// to end, the last of them at minute last after planEpoch.
func archived(t *testing.T, name string, server uint32, start, end string, last int) ArchivedBinlog {
	t.Helper()
	parse := func(s string) mysql.GTIDSet {
		g, err := mysql.ParseGTIDSet(s)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	rec := ArchivedBinlog{Key: "binlogs/" + name, Name: name, Archived: planEpoch.Add(time.Duration(last+1) * time.Minute)}
	rec.ServerID, rec.Start, rec.End = server, parse(start), parse(end)
	rec.LastTime = planEpoch.Add(time.Duration(last) * time.Minute)
	return rec
}

// describe renders a plan as "file[from..stop]" steps.
func describe(steps []ReplayStep) string {
	var parts []string
	for _, s := range steps {
		p := s.Binlog.Name + "[" + s.From.String()
		if !s.Stop.Empty() {
			p += ".." + s.Stop.String()
		}
		parts = append(parts, p+"]")
	}
	return strings.Join(parts, " ")
}

func gtidTarget(t *testing.T, s string) RestoreTarget {
	t.Helper()
	target, err := ParseRestoreTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

func timeTarget(minute int) RestoreTarget {
	return RestoreTarget{Time: planEpoch.Add(time.Duration(minute) * time.Minute)}
}

// TestPlanReplay: the chain of archived files from a backup to a target, across
// rotations and failovers, never replaying a discarded tail and never skipping a
// missing stretch.
func TestPlanReplay(t *testing.T) {
	base := Manifest{Name: "20261206T095500Z", GTID: "0-100-10"}
	// Master 100 wrote a1..a3; a failover at minute 30 made 101 master. 101's first
	// file was opened while it replicated (from 0-100-15), so it overlaps a2.
	a1 := archived(t, "a1", 100, "0-100-5", "0-100-20", 10)
	a2 := archived(t, "a2", 100, "0-100-20", "0-100-30", 20)
	a3 := archived(t, "a3", 100, "0-100-30", "0-100-40", 29)
	b1 := archived(t, "b1", 101, "0-100-15", "0-101-60", 40)
	b2 := archived(t, "b2", 101, "0-101-60", "0-101-70", 50)
	// A copy of a2 archived from a replica (a re-archived stretch).
	a2copy := archived(t, "a2copy", 102, "0-100-20", "0-100-30", 20)
	a2copy.Archived = a2.Archived.Add(time.Hour)

	cases := []struct {
		name    string
		binlogs []ArchivedBinlog
		reach   *ArchiveReach
		target  RestoreTarget
		want    string
	}{
		{"one file", []ArchivedBinlog{a1}, nil, gtidTarget(t, "0-100-15"), "a1[0-100-10]"},
		{"across a rotation", []ArchivedBinlog{a1, a2, a3}, nil, gtidTarget(t, "0-100-35"), "a1[0-100-10] a2[0-100-20] a3[0-100-30]"},
		{"a time in the second file", []ArchivedBinlog{a1, a2, a3}, nil, timeTarget(15), "a1[0-100-10] a2[0-100-20]"},
		{"the backup already holds the target", []ArchivedBinlog{a1}, nil, gtidTarget(t, "0-100-8"), ""},
		{"a stretch archived twice: one copy", []ArchivedBinlog{a1, a2, a2copy, a3}, nil, gtidTarget(t, "0-100-35"), "a1[0-100-10] a2copy[0-100-20] a3[0-100-30]"},
		// The new master's file takes over from its start (inside a1), so a1 is
		// replayed up to 0-100-15 and b1 from there; a2 and a3 hold nothing b1 lacks
		// (or only a tail the cluster discarded) and are left out.
		{"across a failover, the new master's overlapping file", []ArchivedBinlog{a1, a2, a3, b1, b2}, nil, gtidTarget(t, "0-101-65"), "a1[0-100-10..0-100-15] b1[0-100-15] b2[0-101-60]"},
		{"a time after the failover", []ArchivedBinlog{a1, a2, a3, b1, b2}, nil, timeTarget(45), "a1[0-100-10..0-100-15] b1[0-100-15] b2[0-101-60]"},
		{"reach: nothing written since", []ArchivedBinlog{a1}, &ArchiveReach{Time: planEpoch.Add(time.Hour), Position: mustSet(t, "0-100-20")}, timeTarget(45), "a1[0-100-10]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			steps, err := planReplay(base, tc.binlogs, tc.reach, tc.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(steps); got != tc.want {
				t.Errorf("plan %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPlanReplaySkipsADiscardedTail: the old master archived a file whose last
// transactions were never acknowledged (0-100-29, 0-100-30) before it died; the new
// master, which had 0-100-28, numbered its own from 0-100-29 on (0-101-29…). The
// replay takes the old file only up to 0-100-28 and the new master's from there: the
// discarded transactions are not replayed, the kept ones are not skipped.
func TestPlanReplaySkipsADiscardedTail(t *testing.T) {
	base := Manifest{Name: "b", GTID: "0-100-10"}
	old := archived(t, "old", 100, "0-100-5", "0-100-30", 20)
	kept := archived(t, "new", 101, "0-100-28", "0-101-50", 40)
	for _, target := range []RestoreTarget{gtidTarget(t, "0-101-40"), timeTarget(30)} {
		steps, err := planReplay(base, []ArchivedBinlog{old, kept}, nil, target)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := describe(steps), "old[0-100-10..0-100-28] new[0-100-28]"; got != want {
			t.Errorf("to %s: plan %q, want %q", target, got, want)
		}
	}
	// To a GTID inside the old file before the cut, the old file alone, to the target.
	steps, err := planReplay(base, []ArchivedBinlog{old, kept}, nil, gtidTarget(t, "0-100-25"))
	if err != nil || describe(steps) != "old[0-100-10..0-100-28]" {
		t.Errorf("to 0-100-25: %q, %v", describe(steps), err)
	}
}

// TestPlanReplayNamesAGap: a missing stretch is an error naming where the archive
// stops and where it resumes; a target beyond the archive says it is not reached yet.
func TestPlanReplayNamesAGap(t *testing.T) {
	base := Manifest{Name: "b", GTID: "0-100-10"}
	a1 := archived(t, "a1", 100, "0-100-5", "0-100-20", 10)
	a3 := archived(t, "a3", 100, "0-100-30", "0-100-40", 29)
	_, err := planReplay(base, []ArchivedBinlog{a1, a3}, nil, gtidTarget(t, "0-100-35"))
	if !errors.Is(err, ErrArchiveGap) {
		t.Fatalf("a gap: %v", err)
	}
	for _, want := range []string{"nothing after 0-100-20", "resumes at 0-100-30", "a3 of server 100", "after 0-100-20 up to 0-100-30 are missing"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the gap's error %q does not say %q", err, want)
		}
	}
	_, err = planReplay(base, []ArchivedBinlog{a1}, nil, timeTarget(45))
	if err == nil || errors.Is(err, ErrArchiveGap) || !strings.Contains(err.Error(), "does not reach") {
		t.Errorf("a target beyond the archive: %v", err)
	}
	_, err = planReplay(base, nil, nil, gtidTarget(t, "0-100-11"))
	if err == nil || !strings.Contains(err.Error(), "no binlog after the backup") {
		t.Errorf("an empty archive: %v", err)
	}
}

func mustSet(t *testing.T, s string) mysql.GTIDSet {
	t.Helper()
	g, err := mysql.ParseGTIDSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
