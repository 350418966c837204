package main

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/replicant-dev/replicant/failover"
)

// instance is one server as the CLI shows it, from what the controller publishes
// on its pod (labels and the replicant.dev/status annotation).
type instance struct {
	Name     string // <pod>.<headless service>.<namespace>:3306, orchestrator's instance name
	Pod      string
	Master   bool
	Healthy  bool
	Detached bool
	Status   failover.PodStatus
}

func (i instance) replicating() bool {
	return i.Status.Reachable && i.Status.IOThread == "Yes" && i.Status.SQLThread
}

// fields are orchestrator's bracket: lag, status, version, ro|rw, binlog format,
// ">>" (log-slave-updates), "GTID", then replicant's marks: downtimed (a detached
// replica), errant:<gtids>.
func (i instance) fields() []string {
	lag, status := "null", "ok"
	switch {
	case !i.Status.Reachable:
		lag, status = "unknown", "invalid"
	case i.Master:
		lag = "0s"
	case !i.replicating():
		status = "nonreplicating"
	default:
		if i.Status.LagSeconds != nil {
			lag = fmt.Sprintf("%ds", *i.Status.LagSeconds)
		}
		if !i.Healthy {
			status = "lag"
		}
	}
	mode := "rw"
	if i.Status.ReadOnly {
		mode = "ro"
	}
	version, format := i.Status.Version, i.Status.BinlogFmt
	if version == "" {
		version = "unknown"
	}
	if format == "" {
		format = "unknown"
	}
	out := []string{lag, status, version, mode, format, ">>", "GTID"}
	if i.Detached {
		out = append(out, "downtimed")
	}
	if i.Status.ErrantGTIDs != "" {
		out = append(out, "errant:"+i.Status.ErrantGTIDs)
	}
	return out
}

// formatTopology prints a cluster as orchestrator-client -c topology does: the master
// first, then its replicas by name, "+ " for one replicating, "- " otherwise, the
// brackets aligned in one column.
func formatTopology(instances []instance) string {
	sorted := append([]instance(nil), instances...)
	sort.SliceStable(sorted, func(a, b int) bool {
		if sorted[a].Master != sorted[b].Master {
			return sorted[a].Master
		}
		return sorted[a].Name < sorted[b].Name
	})
	heads := make([]string, len(sorted))
	width := 0
	for k, i := range sorted {
		head := i.Name
		if !i.Master {
			if i.replicating() {
				head = "+ " + head
			} else {
				head = "- " + head
			}
		}
		heads[k] = head
		width = max(width, len(head))
	}
	var b strings.Builder
	for k, i := range sorted {
		fmt.Fprintf(&b, "%-*s [%s]\n", width, heads[k], strings.Join(i.fields(), ","))
	}
	return b.String()
}

// formatWide is a table for people: one row per server with its role, health,
// replication threads, lag (rounded down: the status annotation's) and last error.
// Positions are the manager's metric replicant_gtid_sequence.
func formatWide(instances []instance) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "INSTANCE\tROLE\tHEALTHY\tREAD-ONLY\tIO\tSQL\tLAG\tLAST ERROR")
	for _, i := range instances {
		role := "replica"
		if i.Master {
			role = "master"
		}
		if i.Detached {
			role = "detached"
		}
		lag := "-"
		if i.Status.LagSeconds != nil {
			lag = fmt.Sprintf("%ds", *i.Status.LagSeconds)
		}
		healthy := "no"
		if i.Healthy {
			healthy = "yes"
		}
		io, sql := i.Status.IOThread, "No"
		if io == "" {
			io = "-"
		}
		if i.Status.SQLThread {
			sql = "Yes"
		}
		errText := i.Status.LastError
		if i.Status.ErrantGTIDs != "" {
			errText = "errant " + i.Status.ErrantGTIDs + " " + errText
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\n", i.Name, role, healthy, i.Status.ReadOnly, io, sql, lag, strings.TrimSpace(errText))
	}
	w.Flush()
	return b.String()
}
