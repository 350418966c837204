package failover

// PodStatus is the replicant.dev/status annotation of a pod: what the controller last
// observed of its server. The controller writes it; the CLI reads it. It holds only
// what changes when something happens, so that a settled cluster costs the apiserver
// no writes: positions, which move with every commit, are metrics
// (replicant_gtid_sequence), and the lag is rounded down to a bound (LagBounds).
type PodStatus struct {
	Reachable bool   `json:"reachable"`
	Version   string `json:"version,omitempty"`
	ReadOnly  bool   `json:"readOnly"`
	IOThread  string `json:"ioThread,omitempty"`
	SQLThread bool   `json:"sqlThread"`
	// LagSeconds is the replica's lag rounded down to one of LagBounds or to its
	// max-lag; the exact lag is the metric replicant_replica_lag_seconds. A lag below
	// 5 s (the heartbeat is written once a probe interval, so a healthy replica's
	// measured lag moves between 0 and that) is 0.
	LagSeconds  *int64 `json:"lagSeconds,omitempty"`
	Source      string `json:"source,omitempty"`
	LastError   string `json:"lastError,omitempty"`
	BinlogFmt   string `json:"binlogFormat,omitempty"`
	ReportHost  string `json:"reportHost,omitempty"`
	ErrantGTIDs string `json:"errantGTIDs,omitempty"`
	// SemiSync, on the master: whether commits wait for a replica's acknowledgement.
	SemiSync string `json:"semiSync,omitempty"`
}

// LagBounds are the values a published lag is rounded down to, in seconds.
var LagBounds = []int64{0, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 24 * 3600}

// roundLag rounds a lag in seconds down to the largest of LagBounds and maxLag not
// above it: a replica unhealthy for its lag shows at least its max-lag.
func roundLag(secs, maxLag int64) int64 {
	out := LagBounds[0]
	for _, b := range append(LagBounds, maxLag) {
		if b <= secs && b > out {
			out = b
		}
	}
	return out
}
