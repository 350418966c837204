package mysql

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// BinlogSummary is what archiving and point-in-time recovery need to know about one
// binlog file without replaying it: the history it continues (Start), how far it
// takes it (End), and when its transactions were written.
type BinlogSummary struct {
	// ServerID wrote the file (its format description event).
	ServerID uint32 `json:"serverId"`
	// Created is the file's creation time (its format description event's header).
	Created time.Time `json:"created"`
	// Start is the binlog state before the file: its Gtid_list event (MariaDB) or
	// Previous_gtids event (MySQL).
	Start GTIDSet `json:"start"`
	// End is Start with every transaction of the file: the state after it.
	End GTIDSet `json:"end"`
	// Transactions counts the file's GTID events.
	Transactions int `json:"transactions"`
	// FirstTime and LastTime are the timestamps (whole seconds) of the file's first
	// and last transactions; zero without transactions.
	FirstTime time.Time `json:"firstTime,omitzero"`
	LastTime  time.Time `json:"lastTime,omitzero"`
	// Closed: the file ends with a rotate or stop event, so the server has finished
	// writing it. An open file's summary covers what was written so far.
	Closed bool `json:"closed"`
}

// Binlog (format v4) event types this reader interprets: MariaDB's GTID events, and
// MySQL's (a GTID set before the file, one GTID per transaction).
const (
	binlogStopEvent       = 3
	binlogRotateEvent     = 4
	binlogFormatDescEvent = 15
	binlogGTIDEvent       = 162
	binlogGTIDListEvent   = 163
	mysqlGTIDEvent        = 33
	mysqlPreviousGTIDs    = 35
	mysqlTaggedGTIDEvent  = 42
	binlogHeaderSize      = 19
	// binlogMaxEvent bounds one event (max_allowed_packet's ceiling is 1 GiB).
	binlogMaxEvent = 1 << 30
)

var binlogMagic = []byte{0xfe, 'b', 'i', 'n'}

// ErrNotBinlog: the bytes do not start with the binlog magic number.
var ErrNotBinlog = errors.New("not a binlog file (no binlog magic number)")

// ReadBinlogSummary reads a binlog file from r to its end (or to the first event cut
// short: an open file being written) and summarises it. Only event headers and the
// small GTID events are decoded; row data is skipped.
func ReadBinlogSummary(r io.Reader) (BinlogSummary, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic := make([]byte, len(binlogMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != string(binlogMagic) {
		return BinlogSummary{}, ErrNotBinlog
	}
	sum := BinlogSummary{Start: GTIDSet{}, End: GTIDSet{}}
	header := make([]byte, binlogHeaderSize)
	body := make([]byte, 0, 256)
	for offset := int64(len(binlogMagic)); ; {
		if _, err := io.ReadFull(br, header); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return sum, nil // the end, or an event being written
			}
			return sum, err
		}
		when := time.Unix(int64(binary.LittleEndian.Uint32(header[0:4])), 0).UTC()
		kind := header[4]
		serverID := binary.LittleEndian.Uint32(header[5:9])
		size := int64(binary.LittleEndian.Uint32(header[9:13]))
		if size < binlogHeaderSize || size > binlogMaxEvent {
			return sum, fmt.Errorf("binlog event at offset %d: size %d is not plausible", offset, size)
		}
		rest := size - binlogHeaderSize
		switch kind {
		case binlogGTIDEvent, binlogGTIDListEvent, mysqlGTIDEvent, mysqlPreviousGTIDs:
			if cap(body) < int(rest) {
				body = make([]byte, rest)
			}
			body = body[:rest]
			if _, err := io.ReadFull(br, body); err != nil {
				return sum, nil // cut short: an open file
			}
		default:
			if n, err := br.Discard(int(rest)); err != nil || int64(n) < rest {
				return sum, nil
			}
		}
		switch kind {
		case binlogFormatDescEvent:
			if sum.ServerID == 0 {
				sum.ServerID, sum.Created = serverID, when
			}
		case binlogGTIDListEvent:
			if len(body) < 4 {
				return sum, fmt.Errorf("Gtid_list event at offset %d is %d bytes", offset, len(body))
			}
			count := int(binary.LittleEndian.Uint32(body[0:4]) & 0x0fffffff)
			if len(body) < 4+16*count {
				return sum, fmt.Errorf("Gtid_list event at offset %d: %d entries in %d bytes", offset, count, len(body))
			}
			for i := 0; i < count; i++ {
				e := body[4+16*i:]
				g := GTID{Domain: binary.LittleEndian.Uint32(e[0:4]), Server: binary.LittleEndian.Uint32(e[4:8]), Seq: binary.LittleEndian.Uint64(e[8:16])}
				sum.Start.Add(g)
				sum.End.Add(g)
			}
		case binlogGTIDEvent:
			if len(body) < 12 {
				return sum, fmt.Errorf("GTID event at offset %d is %d bytes", offset, len(body))
			}
			sum.End.Add(GTID{Domain: binary.LittleEndian.Uint32(body[8:12]), Server: serverID, Seq: binary.LittleEndian.Uint64(body[0:8])})
			sum.Transactions++
			if sum.FirstTime.IsZero() {
				sum.FirstTime = when
			}
			sum.LastTime = when
		case mysqlPreviousGTIDs:
			prev, err := decodeMySQLGTIDSet(body)
			if err != nil {
				return sum, fmt.Errorf("Previous_gtids event at offset %d: %w", offset, err)
			}
			sum.Start, sum.End = prev, prev.Union(sum.End)
		case mysqlGTIDEvent:
			// flags (1 byte), the source's UUID (16), the transaction number (8).
			if len(body) < 25 {
				return sum, fmt.Errorf("GTID event at offset %d is %d bytes", offset, len(body))
			}
			gno := binary.LittleEndian.Uint64(body[17:25])
			if gno == 0 || gno >= 1<<63 {
				return sum, fmt.Errorf("GTID event at offset %d: transaction number %d", offset, gno)
			}
			sum.End.addInterval(uuidText(body[1:17]), interval{gno, gno})
			sum.Transactions++
			if sum.FirstTime.IsZero() {
				sum.FirstTime = when
			}
			sum.LastTime = when
		case mysqlTaggedGTIDEvent:
			return sum, fmt.Errorf("binlog event at offset %d is a tagged GTID (MySQL 8.3+ GTID tags): not supported", offset)
		case binlogRotateEvent, binlogStopEvent:
			// A rotate event at the very start (a fake one, from a replica's relay log)
			// has no server time; in a binlog file the one that matters is the last.
			if sum.ServerID != 0 {
				sum.Closed = true
			}
		}
		offset += size
	}
}

// decodeMySQLGTIDSet reads a GTID set as MySQL encodes it in a Previous_gtids event:
// the number of sources (8 bytes), then for each its UUID (16), the number of
// intervals (8) and each interval's first and past-the-last number (8 + 8). The
// checksum that may follow is ignored.
func decodeMySQLGTIDSet(b []byte) (GTIDSet, error) {
	set := GTIDSet{}
	if len(b) < 8 {
		return set, fmt.Errorf("%d bytes", len(b))
	}
	n := binary.LittleEndian.Uint64(b[0:8])
	if n>>56 != 0 {
		return set, errors.New("a tagged GTID set (MySQL 8.3+ GTID tags): not supported")
	}
	b = b[8:]
	for i := uint64(0); i < n; i++ {
		if len(b) < 24 {
			return set, fmt.Errorf("source %d of %d cut short", i+1, n)
		}
		uuid, count := uuidText(b[0:16]), binary.LittleEndian.Uint64(b[16:24])
		b = b[24:]
		if count > uint64(len(b))/16 {
			return set, fmt.Errorf("source %s: %d intervals in %d bytes", uuid, count, len(b))
		}
		for j := uint64(0); j < count; j++ {
			lo, end := binary.LittleEndian.Uint64(b[0:8]), binary.LittleEndian.Uint64(b[8:16])
			b = b[16:]
			if lo == 0 || end <= lo || end > 1<<63 {
				return set, fmt.Errorf("source %s: interval [%d, %d)", uuid, lo, end)
			}
			set.addInterval(uuid, interval{lo, end - 1})
		}
	}
	return set, nil
}

// uuidText formats 16 bytes as a server UUID, as MySQL prints it.
func uuidText(b []byte) string {
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
