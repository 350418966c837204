package mysql

import (
	"bufio"
	"encoding/binary"
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
	// Start is the binlog state before the file: its Gtid_list event.
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

// MariaDB binlog (format v4) event types this reader interprets.
const (
	binlogStopEvent       = 3
	binlogRotateEvent     = 4
	binlogFormatDescEvent = 15
	binlogGTIDEvent       = 162
	binlogGTIDListEvent   = 163
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
		case binlogGTIDEvent, binlogGTIDListEvent:
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
