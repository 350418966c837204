package failover

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Prometheus metrics, served on the manager's metrics endpoint.
var (
	operationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "replicant_operations_total",
		Help: "Failovers, forced failovers and takeovers, by cluster, operation and result.",
	}, []string{"namespace", "cluster", "op", "result"})
	operationSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "replicant_operation_duration_seconds",
		Help:    "From the decision to the new master taking writes.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30},
	}, []string{"namespace", "cluster", "op"})
	writesBlockedSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "replicant_takeover_writes_blocked_seconds",
		Help:    "How long a graceful takeover blocked writes.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5},
	}, []string{"namespace", "cluster"})
	replicaLagSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_replica_lag_seconds",
		Help: "Heartbeat lag of each replica (-1: unknown).",
	}, []string{"namespace", "cluster", "pod"})
	probeErrorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "replicant_probe_errors_total",
		Help: "Failed probes of a server.",
	}, []string{"namespace", "cluster", "pod"})
	masterInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_master",
		Help: "1 for the pod that is the cluster's master.",
	}, []string{"namespace", "cluster", "pod"})
	gtidSequence = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_gtid_sequence",
		Help: "The sequence number of the last GTID a server holds, per MariaDB replication domain or MySQL source UUID (its position).",
	}, []string{"namespace", "cluster", "pod", "domain"})
	clustersRemembered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "replicant_clusters",
		Help: "Clusters the controller keeps in memory (it forgets a deleted or opted-out one).",
	})
	poolsOpen = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "replicant_connection_pools",
		Help: "Open connection pools to servers, one per server and user.",
	})
	semiSyncActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "replicant_semi_sync_active",
		Help: "1 when the master's commits wait for a replica (durability semi-sync), 0 when it fell back to async.",
	}, []string{"namespace", "cluster"})
)

func init() {
	metrics.Registry.MustRegister(operationsTotal, operationSeconds, writesBlockedSeconds, replicaLagSeconds,
		probeErrorsTotal, masterInfo, semiSyncActive, gtidSequence, clustersRemembered, poolsOpen,
		backupLastSuccess, backupDuration, backupBytes, backupsTotal, binlogArchiveReach, binlogArchiveRuns)
}

// forgetClusterMetrics drops every series of a cluster that is gone or opted out, so
// that a manager running many clusters over time does not keep them all.
func forgetClusterMetrics(namespace, cluster string) {
	labels := prometheus.Labels{"namespace": namespace, "cluster": cluster}
	for _, vec := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{operationsTotal, operationSeconds, writesBlockedSeconds, replicaLagSeconds, probeErrorsTotal, masterInfo, gtidSequence, semiSyncActive,
		backupLastSuccess, backupDuration, backupBytes, backupsTotal, binlogArchiveReach, binlogArchiveRuns} {
		vec.DeletePartialMatch(labels)
	}
}

// forgetPodMetrics drops the series of a pod the cluster no longer has.
func forgetPodMetrics(namespace, cluster, pod string) {
	labels := prometheus.Labels{"namespace": namespace, "cluster": cluster, "pod": pod}
	for _, vec := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{replicaLagSeconds, probeErrorsTotal, masterInfo, gtidSequence} {
		vec.DeletePartialMatch(labels)
	}
}

// observeMetrics records what one snapshot shows.
func observeMetrics(namespace string, snap Snapshot, plan Plan) {
	for _, srv := range snap.Servers {
		if !srv.Reachable {
			probeErrorsTotal.WithLabelValues(namespace, snap.Cluster, srv.Pod).Inc()
		}
		for domain, seq := range srv.State.CurrentPos.Heads() {
			gtidSequence.WithLabelValues(namespace, snap.Cluster, srv.Pod, domain).Set(float64(seq))
		}
		if plan.Roles[srv.Pod] == RoleReplica {
			lag := srv.Lag.Seconds()
			if srv.Lag < 0 {
				lag = -1
			}
			replicaLagSeconds.WithLabelValues(namespace, snap.Cluster, srv.Pod).Set(lag)
		} else {
			replicaLagSeconds.DeleteLabelValues(namespace, snap.Cluster, srv.Pod)
		}
		master := 0.0
		if plan.Roles[srv.Pod] == RoleMaster {
			master = 1
			if srv.Reachable && srv.State.SemiSync.MasterEnabled {
				active := 0.0
				if srv.State.SemiSync.Waiting() {
					active = 1
				}
				semiSyncActive.WithLabelValues(namespace, snap.Cluster).Set(active)
			}
		}
		masterInfo.WithLabelValues(namespace, snap.Cluster, srv.Pod).Set(master)
	}
}

// observeOperation records a finished operation.
func observeOperation(namespace, cluster string, op Operation) {
	operationsTotal.WithLabelValues(namespace, cluster, op.Op, op.Result).Inc()
	if op.Result == ResultOK {
		operationSeconds.WithLabelValues(namespace, cluster, op.Op).Observe(op.End.Sub(op.Start).Seconds())
		if op.Op == OpTakeover {
			writesBlockedSeconds.WithLabelValues(namespace, cluster).Observe(float64(op.WritesBlockedMs) / 1000)
		}
	}
}
