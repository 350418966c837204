package mysql

import (
	"fmt"
	"maps"
	"slices"
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

// GTIDSet is a set of transactions as a server reports it, in either flavor's form;
// the text says which (a MariaDB GTID has no colon, a MySQL one always has).
//
// MariaDB (@@gtid_binlog_state): for every (domain, server_id) that wrote in a domain,
// the highest sequence number. With gtid_strict_mode sequence numbers only grow within
// a domain, so a server holds every transaction (d, s, n) with n <= set[d][s]. A
// position (@@gtid_current_pos, @@gtid_slave_pos: one GTID per domain) parses into the
// same type.
//
// MySQL (@@gtid_executed): for every source UUID (and tag, MySQL 8.3+), the intervals
// of transaction numbers the server holds, "uuid:1-5:7,uuid2:1-3". Such a set is its
// own position: there is nothing to reduce.
//
// The comparisons mean the same in both forms: Contains, Errant, Ahead and Reaches
// answer "does this server hold every transaction of that one".
type GTIDSet struct {
	domains map[uint32]map[uint32]uint64 // MariaDB: domain -> server_id -> highest sequence
	sources map[string]intervals         // MySQL: "uuid" or "uuid:tag" -> transaction numbers
}

// interval is the transaction numbers lo..hi, both included (1 <= lo <= hi).
type interval struct{ lo, hi uint64 }

// intervals are sorted, disjoint and never adjacent (adjacent ones are merged), so
// that equal sets have equal intervals.
type intervals []interval

// ParseGTIDSet parses MariaDB's "0-1-100,0-2-7,1-1-3" or MySQL's
// "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,…" (spaces and newlines are allowed
// around entries; an empty string is the empty set). A MariaDB (domain, server) given
// twice keeps the higher sequence; MySQL intervals given twice are merged.
func ParseGTIDSet(s string) (GTIDSet, error) {
	set := GTIDSet{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if strings.Contains(part, ":") {
			if err := set.parseMySQL(part); err != nil {
				return GTIDSet{}, err
			}
			continue
		}
		fields := strings.Split(part, "-")
		if len(fields) != 3 {
			return GTIDSet{}, fmt.Errorf("GTID %q: want domain-server-sequence (MariaDB) or uuid:interval (MySQL)", part)
		}
		domain, err1 := strconv.ParseUint(fields[0], 10, 32)
		server, err2 := strconv.ParseUint(fields[1], 10, 32)
		seq, err3 := strconv.ParseUint(fields[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return GTIDSet{}, fmt.Errorf("GTID %q: want unsigned domain-server-sequence numbers", part)
		}
		set.Add(GTID{uint32(domain), uint32(server), seq})
	}
	return set, nil
}

// parseMySQL reads "uuid:1-5:7" or, with tags, "uuid:1-3:tag:4-9:other:1".
func (s *GTIDSet) parseMySQL(part string) error {
	fields := strings.Split(part, ":")
	uuid := strings.ToLower(fields[0])
	if !isUUID(uuid) {
		return fmt.Errorf("GTID set %q: %q is not a server UUID", part, fields[0])
	}
	key, intervalsOfKey := uuid, 0
	for _, f := range fields[1:] {
		if f == "" || !isDigit(f[0]) {
			if key != uuid && intervalsOfKey == 0 {
				return fmt.Errorf("GTID set %q: tag %q has no transactions", part, key[len(uuid)+1:])
			}
			tag := strings.ToLower(f)
			if !isTag(tag) {
				return fmt.Errorf("GTID set %q: %q is neither a tag (a letter or _, then up to 31 letters, digits or _) nor an interval", part, f)
			}
			key, intervalsOfKey = uuid+":"+tag, 0
			continue
		}
		lo, hi, found := strings.Cut(f, "-")
		if !found {
			hi = lo
		}
		a, err1 := strconv.ParseUint(lo, 10, 63)
		b, err2 := strconv.ParseUint(hi, 10, 63)
		if err1 != nil || err2 != nil || a == 0 || b < a {
			return fmt.Errorf("GTID set %q: interval %q: want N or N-M with 1 <= N <= M < 2^63", part, f)
		}
		s.addInterval(key, interval{a, b})
		intervalsOfKey++
	}
	if intervalsOfKey == 0 {
		return fmt.Errorf("GTID set %q: %q has no transactions", part, key)
	}
	return nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !isDigit(c) && (c < 'a' || c > 'f') {
				return false
			}
		}
	}
	return true
}

// isTag: MySQL's GTID tag, a letter or underscore, then up to 31 letters, digits or
// underscores (compared lowercased).
func isTag(s string) bool {
	if len(s) == 0 || len(s) > 32 || isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDigit(c) && (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// Add puts one MariaDB transaction in the set (a (domain, server) keeps its highest
// sequence number).
func (s *GTIDSet) Add(g GTID) {
	if s.domains == nil {
		s.domains = map[uint32]map[uint32]uint64{}
	}
	if s.domains[g.Domain] == nil {
		s.domains[g.Domain] = map[uint32]uint64{}
	}
	if cur, ok := s.domains[g.Domain][g.Server]; !ok || g.Seq > cur {
		s.domains[g.Domain][g.Server] = g.Seq
	}
}

func (s *GTIDSet) addInterval(key string, iv interval) {
	if s.sources == nil {
		s.sources = map[string]intervals{}
	}
	s.sources[key] = s.sources[key].with(iv)
}

// with returns the intervals with iv added (merged with what it overlaps or touches).
func (ivs intervals) with(iv interval) intervals {
	out := make(intervals, 0, len(ivs)+1)
	i := 0
	for ; i < len(ivs) && ivs[i].hi+1 < iv.lo; i++ { // wholly before, not touching
		out = append(out, ivs[i])
	}
	for ; i < len(ivs) && ivs[i].lo <= iv.hi+1; i++ { // overlapping or touching
		iv.lo, iv.hi = min(iv.lo, ivs[i].lo), max(iv.hi, ivs[i].hi)
	}
	out = append(out, iv)
	return append(out, ivs[i:]...)
}

// without returns the numbers of ivs that other does not hold.
func (ivs intervals) without(other intervals) intervals {
	var out intervals
	for _, iv := range ivs {
		lo := iv.lo
		for _, o := range other {
			if o.hi < lo || o.lo > iv.hi {
				continue
			}
			if o.lo > lo {
				out = append(out, interval{lo, o.lo - 1})
			}
			if o.hi >= iv.hi {
				lo = iv.hi + 1
				break
			}
			lo = o.hi + 1
		}
		if lo <= iv.hi {
			out = append(out, interval{lo, iv.hi})
		}
	}
	return out
}

// GTIDs lists the MariaDB entries sorted by domain, then server (a MySQL set has
// none: its transactions are intervals, see String).
func (s GTIDSet) GTIDs() []GTID {
	var out []GTID
	for d, servers := range s.domains {
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

// String formats the set as the server does, sorted, so equal sets print the same:
// MariaDB's entries first, then MySQL's ("uuid:1-5:7", a tagged source as
// "uuid:tag:1-3").
func (s GTIDSet) String() string {
	var parts []string
	for _, g := range s.GTIDs() {
		parts = append(parts, g.String())
	}
	for _, key := range slices.Sorted(maps.Keys(s.sources)) {
		b := strings.Builder{}
		b.WriteString(key)
		for _, iv := range s.sources[key] {
			b.WriteString(":" + strconv.FormatUint(iv.lo, 10))
			if iv.hi != iv.lo {
				b.WriteString("-" + strconv.FormatUint(iv.hi, 10))
			}
		}
		parts = append(parts, b.String())
	}
	return strings.Join(parts, ",")
}

// Empty reports whether the set holds no transaction.
func (s GTIDSet) Empty() bool {
	for _, servers := range s.domains {
		if len(servers) > 0 {
			return false
		}
	}
	for _, ivs := range s.sources {
		if len(ivs) > 0 {
			return false
		}
	}
	return true
}

// Contains reports whether s holds every transaction of other.
func (s GTIDSet) Contains(other GTIDSet) bool { return other.Errant(s).Empty() }

// SubsetOf reports whether other holds every transaction of s.
func (s GTIDSet) SubsetOf(other GTIDSet) bool { return other.Contains(s) }

// Equal reports whether both sets hold the same transactions.
func (s GTIDSet) Equal(other GTIDSet) bool { return s.Contains(other) && other.Contains(s) }

// Errant returns the transactions s holds that reference does not: on a server that
// should be a replica of reference, these are errant transactions (written locally,
// or by an old master, and never seen by the new one). For MariaDB they are the newest
// GTID of each (domain, server) that is ahead (sequence numbers are counted per
// domain, not per server, so how many lie behind each head is not known from the
// states alone); for MySQL, exactly the transactions.
func (s GTIDSet) Errant(reference GTIDSet) GTIDSet {
	return s.ErrantBeyond(reference, GTIDSet{})
}

// ErrantBeyond is Errant for a reference server whose binlog does not hold its whole
// history. MariaDB: a server cloned from a backup (or whose binlogs were purged) names
// in @@gtid_binlog_state only the servers whose transactions it logged since, yet it
// applied every transaction of a domain up to the head of its @@gtid_slave_pos there
// (referenceApplied). A (domain, server) the reference's binlog state does not name at
// all is held up to that head. A server it does name is still compared exactly, which
// is what catches an old master's transactions written beside the new history.
// MySQL's @@gtid_executed always names the whole history (purged transactions too), so
// there referenceApplied only adds what it holds.
func (s GTIDSet) ErrantBeyond(reference, referenceApplied GTIDSet) GTIDSet {
	applied := referenceApplied.domainHeads()
	out := GTIDSet{}
	for _, g := range s.GTIDs() {
		have, ok := reference.domains[g.Domain][g.Server]
		switch {
		case ok && g.Seq <= have:
		case !ok && g.Seq <= applied[g.Domain]:
		default:
			out.Add(g)
		}
	}
	for key, ivs := range s.sources {
		for _, iv := range ivs.without(reference.sources[key]).without(referenceApplied.sources[key]) {
			out.addInterval(key, iv)
		}
	}
	return out
}

// Ahead compares two positions: it is > 0 when s is further than other somewhere and
// nowhere behind, < 0 for the reverse, 0 when equal or when they diverge (each ahead
// somewhere). MariaDB positions compare domain by domain, MySQL sets by inclusion.
// Used to pick the most advanced replica.
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
	if len(s.sources) > 0 || len(other.sources) > 0 {
		mysqlPart := func(g GTIDSet) GTIDSet { return GTIDSet{sources: g.sources} }
		ahead = ahead || !mysqlPart(s).Errant(mysqlPart(other)).Empty()
		behind = behind || !mysqlPart(other).Errant(mysqlPart(s)).Empty()
	}
	switch {
	case ahead && !behind:
		return 1
	case behind && !ahead:
		return -1
	}
	return 0
}

// domainHeads is the highest sequence number per MariaDB domain.
func (s GTIDSet) domainHeads() map[uint32]uint64 {
	heads := map[uint32]uint64{}
	for d, servers := range s.domains {
		for _, seq := range servers {
			if seq > heads[d] {
				heads[d] = seq
			}
		}
	}
	return heads
}

// Heads is the highest transaction number per MariaDB domain ("0") and per MySQL
// source ("uuid"): how far each history reached, for metrics.
func (s GTIDSet) Heads() map[string]uint64 {
	heads := map[string]uint64{}
	for d, seq := range s.domainHeads() {
		heads[strconv.FormatUint(uint64(d), 10)] = seq
	}
	for key, ivs := range s.sources {
		if len(ivs) > 0 {
			heads[key] = ivs[len(ivs)-1].hi
		}
	}
	return heads
}

// Position reduces a MariaDB set to one GTID per domain, the highest sequence number
// (what MASTER_GTID_WAIT and gtid_slave_pos take). A MySQL set stays whole: it is
// what WAIT_FOR_EXECUTED_GTID_SET takes.
func (s GTIDSet) Position() GTIDSet {
	pos := GTIDSet{}
	for d, servers := range s.domains {
		var best GTID
		found := false
		for srv, seq := range servers {
			if !found || seq > best.Seq || (seq == best.Seq && srv < best.Server) {
				best, found = GTID{d, srv, seq}, true
			}
		}
		pos.Add(best)
	}
	for key, ivs := range s.sources {
		for _, iv := range ivs {
			pos.addInterval(key, iv)
		}
	}
	return pos
}

// Union holds every transaction of s and of other.
func (s GTIDSet) Union(other GTIDSet) GTIDSet {
	out := GTIDSet{}
	for _, set := range []GTIDSet{s, other} {
		for _, g := range set.GTIDs() {
			out.Add(g)
		}
		for key, ivs := range set.sources {
			for _, iv := range ivs {
				out.addInterval(key, iv)
			}
		}
	}
	return out
}

// Furthest is the further of two positions: per MariaDB domain the GTID with the
// higher sequence number (s's on a tie), for MySQL both sets' transactions.
func (s GTIDSet) Furthest(other GTIDSet) GTIDSet {
	out := GTIDSet{}
	mine := s.Position()
	theirs := other.Position()
	for _, g := range mine.GTIDs() {
		out.Add(g)
	}
	for _, g := range theirs.GTIDs() {
		if head, ok := out.domainHeads()[g.Domain]; !ok || g.Seq > head {
			delete(out.domains, g.Domain) // (a set with no MariaDB part has no map yet)
			out.Add(g)
		}
	}
	for _, set := range []GTIDSet{mine, theirs} {
		for key, ivs := range set.sources {
			for _, iv := range ivs {
				out.addInterval(key, iv)
			}
		}
	}
	return out
}

// Reaches reports whether s is at or beyond other: in every MariaDB domain other has,
// at or beyond its head (a server that received s received every transaction of
// other: sequence numbers grow along one history per domain, gtid_strict_mode); for
// MySQL, holding every transaction of other.
func (s GTIDSet) Reaches(other GTIDSet) bool {
	mine := s.domainHeads()
	for d, seq := range other.domainHeads() {
		if mine[d] < seq {
			return false
		}
	}
	return GTIDSet{sources: other.sources}.Errant(GTIDSet{sources: s.sources}).Empty()
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
