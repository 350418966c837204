package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/replicant-dev/replicant/failover"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const seedVersion = "5.7.26-29-log" // the seed's, so its lines can be compared as they are

func seedName(ordinal string) string {
	return "mycluster-mysql-cluster-db-mysql-" + ordinal + ".mysql.default:3306"
}

func lag(s int64) *int64 { return &s }

func master(ordinal string) instance {
	return instance{Name: seedName(ordinal), Master: true, Healthy: true, Status: failover.PodStatus{
		Reachable: true, Version: seedVersion, BinlogFmt: "ROW"}}
}

func replica(ordinal string, seconds int64) instance {
	return instance{Name: seedName(ordinal), Healthy: true, Status: failover.PodStatus{
		Reachable: true, Version: seedVersion, ReadOnly: true, BinlogFmt: "ROW", IOThread: "Yes", SQLThread: true, LagSeconds: lag(seconds)}}
}

func TestTopologyGolden(t *testing.T) {
	stopped := replica("0", 0)
	stopped.Status.IOThread, stopped.Status.SQLThread, stopped.Status.LagSeconds = "No", false, nil
	stopped.Detached = true
	unreachable := replica("2", 0)
	unreachable.Status = failover.PodStatus{Reachable: false, Version: seedVersion, ReadOnly: true, BinlogFmt: "ROW", LastError: "connection refused"}
	lagging := replica("2", 45)
	lagging.Healthy = false
	errant := replica("0", 0)
	errant.Healthy = false
	errant.Status.IOThread, errant.Status.SQLThread, errant.Status.LagSeconds = "No", false, nil
	errant.Status.ErrantGTIDs = "0-100-42"
	long := replica("2", 0)
	long.Name = "a-much-longer-statefulset-name-mysql-2.mysql.production:3306"
	downMaster := master("1")
	downMaster.Status.Reachable = false

	// MySQL 9.7: its version string and a UUID-set errant transaction.
	mysqlServer := func(i instance) instance {
		i.Status.Version = "9.7.4-2"
		return i
	}
	mysqlErrant := mysqlServer(errant)
	mysqlErrant.Status.ErrantGTIDs = "3e11fa47-71ca-11e1-9e33-c80aa9429562:7-9"

	cases := map[string][]instance{
		"mysql": {mysqlServer(master("1")), mysqlErrant, mysqlServer(replica("2", 3))},
		// seed lines 33-35
		"healthy": {master("0"), replica("1", 0), replica("2", 0)},
		// seed lines 83-84 after the takeover of its time: old master out, downtimed
		"stopped-and-unreachable": {master("1"), stopped, unreachable},
		"lagging":                 {master("1"), replica("0", 0), lagging},
		"errant":                  {master("1"), errant, replica("2", 0)},
		"aligned":                 {master("0"), replica("1", 0), long},
		// seed lines 206-208
		"master-unreachable": {downMaster, func() instance {
			r := replica("0", 0)
			r.Status.IOThread, r.Status.LagSeconds = "Connecting", nil
			return r
		}(),
			func() instance {
				r := replica("2", 0)
				r.Status.IOThread, r.Status.LagSeconds = "Connecting", nil
				return r
			}()},
	}
	for name, instances := range cases {
		t.Run(name, func(t *testing.T) {
			got := formatTopology(instances)
			path := filepath.Join("testdata", "topology-"+name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
