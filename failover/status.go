package failover

// PodStatus is the replicant.dev/status annotation of a pod: what the controller last
// observed of its server. The controller writes it; the CLI reads it.
type PodStatus struct {
	Reachable   bool   `json:"reachable"`
	Version     string `json:"version,omitempty"`
	ReadOnly    bool   `json:"readOnly"`
	GTID        string `json:"gtid,omitempty"`
	IOThread    string `json:"ioThread,omitempty"`
	SQLThread   bool   `json:"sqlThread"`
	LagSeconds  *int64 `json:"lagSeconds,omitempty"`
	Source      string `json:"source,omitempty"`
	LastError   string `json:"lastError,omitempty"`
	BinlogFmt   string `json:"binlogFormat,omitempty"`
	ReportHost  string `json:"reportHost,omitempty"`
	ErrantGTIDs string `json:"errantGTIDs,omitempty"`
	// SemiSync, on the master: whether commits wait for a replica's acknowledgement.
	SemiSync string `json:"semiSync,omitempty"`
}
