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
			var errant []string
			for _, e := range r.Errant(m) {
				errant = append(errant, e.String())
			}
			if got := strings.Join(errant, ","); got != tc.errant {
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

// FuzzGTIDSet: parsing never panics; what parses formats to a canonical string that
// parses to an equal set; a set contains itself and has no errant transactions
// against itself; adding a transaction makes the result contain the original.
func FuzzGTIDSet(f *testing.F) {
	for _, s := range []string{"", "0-1-100", "0-1-100,0-2-7,1-1-3", "0-1-5, 0-1-9", "x", "1-2"} {
		f.Add(s, uint32(0), uint32(1), uint64(1))
	}
	f.Fuzz(func(t *testing.T, s string, d, srv uint32, seq uint64) {
		set, err := ParseGTIDSet(s)
		if err != nil {
			return
		}
		again, err := ParseGTIDSet(set.String())
		if err != nil || !again.Equal(set) || again.String() != set.String() {
			t.Fatalf("round trip of %q: %q (%v)", s, set.String(), err)
		}
		if !set.Contains(set) || len(set.Errant(set)) != 0 || set.Ahead(set) != 0 {
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
		for _, g := range parse(c.replica).ErrantBeyond(cloned, applied) {
			got = append(got, g.String())
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s against a clone: errant %v, want %v", c.replica, got, c.want)
		}
		if c.want == nil && len(parse(c.replica).Errant(cloned)) == 0 {
			t.Errorf("%s: the exact check alone would not flag it; the case tests nothing", c.replica)
		}
	}
}
