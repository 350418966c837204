package mysql

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// GTID is one MariaDB global transaction id, domain-server-sequence.
type GTID struct {
	Domain, Server uint32
	Seq            uint64
}

func (g GTID) String() string { return fmt.Sprintf("%d-%d-%d", g.Domain, g.Server, g.Seq) }

// GTIDSet is what a MariaDB server has in its binlog, as @@gtid_binlog_state gives it:
// for every (domain, server_id) that wrote in a domain, the highest sequence number.
// With gtid_strict_mode sequence numbers only grow within a domain, so a server holds
// every transaction (d, s, n) with n <= set[d][s]. A position (@@gtid_current_pos,
// @@gtid_slave_pos: one GTID per domain) parses into the same type.
type GTIDSet map[uint32]map[uint32]uint64

// ParseGTIDSet parses "0-1-100,0-2-7,1-1-3" (spaces and newlines are allowed around
// entries; an empty string is the empty set). A (domain, server) given twice keeps
// the higher sequence.
func ParseGTIDSet(s string) (GTIDSet, error) {
	set := GTIDSet{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		fields := strings.Split(part, "-")
		if len(fields) != 3 {
			return nil, fmt.Errorf("GTID %q: want domain-server-sequence", part)
		}
		domain, err1 := strconv.ParseUint(fields[0], 10, 32)
		server, err2 := strconv.ParseUint(fields[1], 10, 32)
		seq, err3 := strconv.ParseUint(fields[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("GTID %q: want unsigned domain-server-sequence numbers", part)
		}
		set.add(GTID{uint32(domain), uint32(server), seq})
	}
	return set, nil
}

func (s GTIDSet) add(g GTID) {
	if s[g.Domain] == nil {
		s[g.Domain] = map[uint32]uint64{}
	}
	if cur, ok := s[g.Domain][g.Server]; !ok || g.Seq > cur {
		s[g.Domain][g.Server] = g.Seq
	}
}

// GTIDs lists the entries sorted by domain, then server.
func (s GTIDSet) GTIDs() []GTID {
	var out []GTID
	for d, servers := range s {
		for srv, seq := range servers {
			out = append(out, GTID{d, srv, seq})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Domain != out[j].Domain {
			return out[i].Domain < out[j].Domain
		}
		return out[i].Server < out[j].Server
	})
	return out
}

// String formats the set as MariaDB does, sorted, so equal sets print the same.
func (s GTIDSet) String() string {
	gtids := s.GTIDs()
	parts := make([]string, len(gtids))
	for i, g := range gtids {
		parts[i] = g.String()
	}
	return strings.Join(parts, ",")
}

// Empty reports whether the set holds no transaction.
func (s GTIDSet) Empty() bool { return len(s.GTIDs()) == 0 }

// Contains reports whether s holds every transaction of other.
func (s GTIDSet) Contains(other GTIDSet) bool { return len(other.Errant(s)) == 0 }

// SubsetOf reports whether other holds every transaction of s.
func (s GTIDSet) SubsetOf(other GTIDSet) bool { return other.Contains(s) }

// Equal reports whether both sets hold the same transactions.
func (s GTIDSet) Equal(other GTIDSet) bool { return s.Contains(other) && other.Contains(s) }

// Errant returns the transactions s holds that reference does not, as the newest
// GTID of each (domain, server) that is ahead: on a server that should be a replica of
// reference, these are errant transactions (written locally, or by an old master, and
// never seen by the new one). Sequence numbers are counted per domain, not per server,
// so how many transactions lie behind each head is not known from the states alone.
func (s GTIDSet) Errant(reference GTIDSet) []GTID {
	return s.ErrantBeyond(reference, nil)
}

// ErrantBeyond is Errant for a reference server whose binlog does not hold its whole
// history: a server cloned from a backup (or whose binlogs were purged) names in
// @@gtid_binlog_state only the servers whose transactions it logged since, yet it
// applied every transaction of a domain up to the head of its @@gtid_slave_pos there
// (referenceApplied). A (domain, server) the reference's binlog state does not name at
// all is held up to that head. A server it does name is still compared exactly, which
// is what catches an old master's transactions written beside the new history.
func (s GTIDSet) ErrantBeyond(reference, referenceApplied GTIDSet) []GTID {
	applied := referenceApplied.domainHeads()
	var out []GTID
	for _, g := range s.GTIDs() {
		have, ok := reference[g.Domain][g.Server]
		switch {
		case ok && g.Seq <= have:
		case !ok && g.Seq <= applied[g.Domain]:
		default:
			out = append(out, g)
		}
	}
	return out
}

// Ahead compares two positions domain by domain: it is > 0 when s is further than
// other in some domain and nowhere behind, < 0 for the reverse, 0 when equal or when
// they diverge (each ahead somewhere). Used to pick the most advanced replica.
func (s GTIDSet) Ahead(other GTIDSet) int {
	a, b := s.domainHeads(), other.domainHeads()
	ahead, behind := false, false
	for d, seq := range a {
		if seq > b[d] {
			ahead = true
		} else if seq < b[d] {
			behind = true
		}
	}
	for d, seq := range b {
		if _, ok := a[d]; !ok && seq > 0 {
			behind = true
		}
	}
	switch {
	case ahead && !behind:
		return 1
	case behind && !ahead:
		return -1
	}
	return 0
}

// domainHeads is the highest sequence number per domain.
func (s GTIDSet) domainHeads() map[uint32]uint64 {
	heads := map[uint32]uint64{}
	for d, servers := range s {
		for _, seq := range servers {
			if seq > heads[d] {
				heads[d] = seq
			}
		}
	}
	return heads
}

// Position reduces the set to one GTID per domain, the highest sequence number (what
// MASTER_GTID_WAIT and gtid_slave_pos take).
func (s GTIDSet) Position() GTIDSet {
	pos := GTIDSet{}
	for d, servers := range s {
		var best GTID
		found := false
		for srv, seq := range servers {
			if !found || seq > best.Seq || (seq == best.Seq && srv < best.Server) {
				best, found = GTID{d, srv, seq}, true
			}
		}
		pos.add(best)
	}
	return pos
}

// Union holds every transaction of s and of other.
func (s GTIDSet) Union(other GTIDSet) GTIDSet {
	out := GTIDSet{}
	for _, set := range []GTIDSet{s, other} {
		for _, g := range set.GTIDs() {
			out.add(g)
		}
	}
	return out
}

// Reaches reports whether s is at or beyond other in every domain other has: a server
// that received s received every transaction of other (sequence numbers grow along
// one history per domain, gtid_strict_mode).
func (s GTIDSet) Reaches(other GTIDSet) bool {
	mine := s.domainHeads()
	for d, seq := range other.domainHeads() {
		if mine[d] < seq {
			return false
		}
	}
	return true
}

// MarshalText writes the set as String does (JSON gives it as a string).
func (s GTIDSet) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses what MarshalText wrote.
func (s *GTIDSet) UnmarshalText(text []byte) error {
	set, err := ParseGTIDSet(string(text))
	if err != nil {
		return err
	}
	*s = set
	return nil
}
