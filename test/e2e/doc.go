// Package e2e is replicant's end-to-end suite: the seed's walk-through and the
// situations that bit its users, run against a real single-node Kubernetes cluster
// built on this machine (test/cluster), replicant installed from manifests/ as a user
// would. `make test` and `make e2e` run it (REPLICANT_E2E=1); the suite brings the
// cluster up and removes it, failure or not.
package e2e
