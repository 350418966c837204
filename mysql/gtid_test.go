package mysql

import (
	"fmt"
	"strings"
	"testing"
)

func mustSet(t testing.TB, s string) GTIDSet {
	t.Helper()
	set, err := ParseGTIDSet(s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestParseAndFormat(t *testing.T) {
	cases := map[string]string{
		"":                  "",
		"0-1-100":           "0-1-100",
		"1-2-3, 0-1-100":    "0-1-100,1-2-3",
		"0-2-7,0-1-100\n":   "0-1-100,0-2-7",
		"0-1-5,0-1-9,0-1-7": "0-1-9",
		"4294967295-4294967295-18446744073709551615": "4294967295-4294967295-18446744073709551615",
	}
	for in, want := range cases {
		if got := mustSet(t, in).String(); got != want {
			t.Errorf("ParseGTIDSet(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{"0-1", "a-b-c", "0-1-2-3", "-1-2-3", "0-1-x", "4294967296-1-1", "0--1"} {
		if _, err := ParseGTIDSet(bad); err == nil {
			t.Errorf("ParseGTIDSet(%q) accepted", bad)
		}
	}
}

// The scenarios of a failover, as binlog states.
func TestCompareAndErrant(t *testing.T) {
	cases := []struct {
		name         string
		replica      string
		master       string
		subset       bool
		errant       string
		replicaAhead int
	}{
		{"caught up", "0-101-100", "0-101-100", true, "", 0},
		{"behind", "0-101-90", "0-101-100", true, "", -1},
		{"new master took over", "0-101-100", "0-101-100,0-102-130", true, "", -1},
		{"old master wrote after the last replicated", "0-101-106", "0-101-105,0-102-110", false, "0-101-106", -1},
		{"local writes on a replica", "0-101-100,0-103-1", "0-101-120", false, "0-103-1", -1},
		{"several errant", "0-101-100,0-103-4,1-103-2", "0-101-120", false, "0-103-4,1-103-2", 0},
		{"other domain", "0-101-5,1-101-3", "0-101-5", false, "1-101-3", 1},
		{"empty replica", "", "0-101-5", true, "", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, m := mustSet(t, tc.replica), mustSet(t, tc.master)
			if got := r.SubsetOf(m); got != tc.subset {
				t.Errorf("SubsetOf = %v, want %v", got, tc.subset)
			}
			if got := r.Errant(m).String(); got != tc.errant {
				t.Errorf("Errant = %q, want %q", got, tc.errant)
			}
			if got := r.Ahead(m); got != tc.replicaAhead {
				t.Errorf("Ahead = %d, want %d", got, tc.replicaAhead)
			}
			if m.Ahead(r) != -tc.replicaAhead {
				t.Errorf("Ahead is not antisymmetric")
			}
			if r.Equal(m) != (tc.subset && m.SubsetOf(r)) {
				t.Errorf("Equal inconsistent with SubsetOf")
			}
		})
	}
}

const (
	uuidA = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	uuidB = "aa8c1d2e-0000-11f1-8000-000000000001"
	uuidC = "ffffffff-ffff-ffff-ffff-ffffffffffff"
)

func TestParseAndFormatMySQL(t *testing.T) {
	cases := map[string]string{
		uuidA + ":1-5":                                  uuidA + ":1-5",
		strings.ToUpper(uuidA) + ":3":                   uuidA + ":3",
		uuidA + ":1-5:7-9:6":                            uuidA + ":1-9",
		uuidA + ":7-9:1-3,\n" + uuidA + ":4":            uuidA + ":1-4:7-9",
		uuidB + ":1-3," + uuidA + ":2":                  uuidA + ":2," + uuidB + ":1-3",
		uuidA + ":1-3:blue:1-2:Green_2:5":               uuidA + ":1-3," + uuidA + ":blue:1-2," + uuidA + ":green_2:5",
		uuidA + ":9223372036854775807":                  uuidA + ":9223372036854775807",
		"0-1-5," + uuidA + ":1-2":                       "0-1-5," + uuidA + ":1-2",
		uuidA + ":1-2:3-4:10-11:5-9":                    uuidA + ":1-11",
		uuidA + ":5-9:1-2:7-12," + uuidA + ":3-3:20-20": uuidA + ":1-3:5-12:20",
	}
	for in, want := range cases {
		if got := mustSet(t, in).String(); got != want {
			t.Errorf("ParseGTIDSet(%q) = %q, want %q", in, got, want)
		}
	}
	for _, bad := range []string{uuidA, uuidA + ":", uuidA + ":0", uuidA + ":5-3", uuidA + ":1-x", uuidA[:35] + ":1",
		"3e11fa47_71ca-11e1-9e33-c80aa9429562:1", "3e11fa47-71ca-11e1-9e33-c80aa942956g:1", uuidA + ":9223372036854775808",
		uuidA + ":tag", uuidA + ":tag:", uuidA + ":1tag:1", uuidA + ":a-b:1", uuidA + ":t:1-2:u"} {
		if _, err := ParseGTIDSet(bad); err == nil {
			t.Errorf("ParseGTIDSet(%q) accepted", bad)
		}
	}
}

// The scenarios of a failover on MySQL, as @@gtid_executed sets: the same answers as
// MariaDB's, by exact set difference.
func TestCompareAndErrantMySQL(t *testing.T) {
	cases := []struct {
		name         string
		replica      string
		master       string
		errant       string
		replicaAhead int
	}{
		{"caught up", uuidA + ":1-100", uuidA + ":1-100", "", 0},
		{"behind", uuidA + ":1-90", uuidA + ":1-100", "", -1},
		{"new master took over", uuidA + ":1-100", uuidA + ":1-100," + uuidB + ":1-30", "", -1},
		// Diverged: MySQL has no order across sources, so neither is ahead (MariaDB
		// compares the domain's sequence numbers and calls the master ahead).
		{"old master wrote after the last replicated", uuidA + ":1-106", uuidA + ":1-105," + uuidB + ":1-10", uuidA + ":106", 0},
		{"local writes on a replica", uuidA + ":1-100," + uuidC + ":1", uuidA + ":1-120", uuidC + ":1", 0},
		{"several errant", uuidA + ":1-100," + uuidC + ":1-4", uuidA + ":1-99", uuidA + ":100," + uuidC + ":1-4", 1},
		{"a gap the master lacks", uuidA + ":1-10:12", uuidA + ":1-11", uuidA + ":12", 0},
		{"empty replica", "", uuidA + ":1-5", "", -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, m := mustSet(t, tc.replica), mustSet(t, tc.master)
			if got := r.Errant(m).String(); got != tc.errant {
				t.Errorf("Errant = %q, want %q", got, tc.errant)
			}
			if got := r.SubsetOf(m); got != (tc.errant == "") {
				t.Errorf("SubsetOf = %v, want %v", got, tc.errant == "")
			}
			if got := r.Ahead(m); got != tc.replicaAhead {
				t.Errorf("Ahead = %d, want %d", got, tc.replicaAhead)
			}
			if m.Ahead(r) != -tc.replicaAhead {
				t.Errorf("Ahead is not antisymmetric")
			}
			if got := m.Reaches(r); got != (tc.errant == "") {
				t.Errorf("master Reaches replica = %v, want %v", got, tc.errant == "")
			}
			// A MySQL set is its own position, and what a cloned master applied adds
			// to what it holds.
			if !r.Position().Equal(r) || !r.ErrantBeyond(m, r).Empty() {
				t.Errorf("Position or ErrantBeyond wrong for %q", r)
			}
		})
	}
}

func TestFurthestAndHeads(t *testing.T) {
	got := mustSet(t, "0-1-5,1-2-9").Furthest(mustSet(t, "0-3-7,1-1-8,2-1-1"))
	if want := "0-3-7,1-2-9,2-1-1"; got.String() != want {
		t.Errorf("Furthest = %q, want %q", got, want)
	}
	if got := mustSet(t, "").Furthest(mustSet(t, "0-1-5")); got.String() != "0-1-5" {
		t.Errorf("Furthest from the empty position = %q, want 0-1-5", got)
	}
	got = mustSet(t, uuidA+":1-5").Furthest(mustSet(t, uuidA+":1-7,"+uuidB+":1"))
	if want := uuidA + ":1-7," + uuidB + ":1"; got.String() != want {
		t.Errorf("Furthest = %q, want %q", got, want)
	}
	heads := mustSet(t, "0-1-5,0-2-9,"+uuidA+":1-5:9-12").Heads()
	if fmt.Sprint(heads) != fmt.Sprintf("map[0:9 %s:12]", uuidA) {
		t.Errorf("Heads = %v", heads)
	}
}

// FuzzGTIDSet: parsing never panics; what parses formats to a canonical string that
// parses to an equal set; a set contains itself and has no errant transactions
// against itself; adding a transaction makes the result contain the original.
func FuzzGTIDSet(f *testing.F) {
	for _, s := range []string{"", "0-1-100", "0-1-100,0-2-7,1-1-3", "0-1-5, 0-1-9", "x", "1-2",
		uuidA + ":1-5:7", uuidA + ":1-3," + uuidB + ":4-9:11:tag:1", "0-1-5," + uuidC + ":2-3"} {
		f.Add(s, uint32(0), uint32(1), uint64(1), "")
		f.Add(s, uint32(0), uint32(1), uint64(1), uuidA+":6")
	}
	f.Fuzz(func(t *testing.T, s string, d, srv uint32, seq uint64, other string) {
		set, err := ParseGTIDSet(s)
		if err != nil {
			return
		}
		again, err := ParseGTIDSet(set.String())
		if err != nil || !again.Equal(set) || again.String() != set.String() {
			t.Fatalf("round trip of %q: %q (%v)", s, set.String(), err)
		}
		if !set.Contains(set) || !set.Errant(set).Empty() || set.Ahead(set) != 0 {
			t.Fatalf("%q does not contain itself", set)
		}
		bigger, _ := ParseGTIDSet(set.String() + "," + fmt.Sprintf("%d-%d-%d", d, srv, seq))
		if !bigger.Contains(set) {
			t.Fatalf("%q plus a transaction does not contain %q", bigger, set)
		}
		if u := set.Union(bigger); !u.Equal(bigger) || !u.Contains(set) {
			t.Fatalf("union of %q and %q is %q", set, bigger, u)
		}
		if set.Ahead(bigger) > 0 {
			t.Fatalf("%q is ahead of %q", set, bigger)
		}
		// Against any other set: what s holds beyond it is errant, and nothing else.
		o, err := ParseGTIDSet(other)
		if err != nil {
			return
		}
		errant, u := set.Errant(o), set.Union(o)
		if errant.Empty() != o.Contains(set) || !o.Union(errant).Contains(set) {
			t.Fatalf("errant of %q against %q is %q", set, o, errant)
		}
		if len(set.sources) > 0 && !errant.Errant(set).Empty() {
			t.Fatalf("errant of %q against %q (%q) holds what %q has not", set, o, errant, set)
		}
		if !u.Contains(set) || !u.Contains(o) || !u.Reaches(set) || !u.Reaches(o) || u.Ahead(set) < 0 || u.Ahead(o) < 0 {
			t.Fatalf("union of %q and %q is %q", set, o, u)
		}
		if a, b := set.Ahead(o), o.Ahead(set); a != -b {
			t.Fatalf("Ahead(%q, %q) = %d, reverse %d", set, o, a, b)
		}
	})
}

// A master cloned from a backup names in its binlog state only the servers it logged
// transactions of since the clone; what it applied by replication covers the rest.
func TestErrantBeyondAClonedReference(t *testing.T) {
	parse := func(s string) GTIDSet {
		t.Helper()
		set, err := ParseGTIDSet(s)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	cloned, applied := parse("0-100-2400,0-104-2500"), parse("0-100-2400")
	for _, c := range []struct {
		replica string
		want    []string
	}{
		{"0-100-2400,0-101-2025", nil},              // an older master's writes, before the clone point
		{"0-100-2400,0-101-2025,0-104-2500", nil},   // and the new master's
		{"0-100-2401", []string{"0-100-2401"}},      // a server the reference names: exact
		{"0-101-2450", []string{"0-101-2450"}},      // beyond what the reference applied
		{"1-100-5,0-100-2400", []string{"1-100-5"}}, // a domain the reference never saw
		{"0-100-2400,0-101-2025,0-105-2600", []string{"0-105-2600"}},
	} {
		var got []string
		for _, g := range parse(c.replica).ErrantBeyond(cloned, applied).GTIDs() {
			got = append(got, g.String())
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s against a clone: errant %v, want %v", c.replica, got, c.want)
		}
		if c.want == nil && parse(c.replica).Errant(cloned).Empty() {
			t.Errorf("%s: the exact check alone would not flag it; the case tests nothing", c.replica)
		}
	}
}
