# replicant — `make demo` (later) and `make test` do everything on a fresh Debian machine.
#
# Versions are pinned here, once. Built tools live in a cache outside the clone
# ($(CACHE), default ~/.cache/replicant, override with REPLICANT_CACHE) so that fresh
# clones (CI) reuse them; bin/ (git-ignored) holds links into it.

K8S_VERSION          ?= v1.34.4
HELM_VERSION         ?= v3.19.5
CERT_MANAGER_VERSION ?= v1.11.5
COREDNS_VERSION      ?= v1.11.3
RCLONE_VERSION       ?= v1.76.0

CACHE    ?= $(or $(REPLICANT_CACHE),$(HOME)/.cache/replicant)
K8S_DIR  := $(CACHE)/k8s-$(K8S_VERSION)
HELM_BIN := $(CACHE)/helm-$(HELM_VERSION)/helm
RCLONE_BIN := $(CACHE)/rclone-$(RCLONE_VERSION)/rclone
# Debian sid's MySQL (mysql-server-core 9.7): the only Debian suite that ships one.
MYSQL_ROOTFS := $(CACHE)/mysql-rootfs-sid
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

export KUBEBUILDER_ASSETS := $(CURDIR)/bin/k8s/$(K8S_VERSION)
export HELM               := $(CURDIR)/bin/helm

k8s_minor  = $(word 2,$(subst ., ,$(K8S_VERSION)))
SUDO      := $(if $(filter 0,$(shell id -u)),,sudo)
DEB_PKGS  := etcd-server mariadb-server mariadb-backup \
	containerd runc containernetworking-plugins iptables debootstrap openssl
K8S_BINS  := kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy
# The image the shipped manifests run: the local cluster's image carries that name.
REPLICANT_IMAGE := $(shell sed -n 's/^ *image: *//p' manifests/deployment.yaml)

.PHONY: all build test unit lint deps k8s-bins tools helm rclone mysql-rootfs bench fuzz sim clean cluster-build demo demo-down e2e

all: build

## build: the static replicant binary (CGO off) in bin/, also as the kubectl plugin name
build:
	@mkdir -p bin
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/replicant ./cmd/replicant
	@ln -sf replicant bin/kubectl-replicant

## test: everything — lint, unit tests, real MariaDB and apiserver tests, the
## end-to-end suite on a real local cluster, a short fuzz run
test: deps cluster-build lint
	CERT_MANAGER_CRDS="$$(go mod download -json github.com/cert-manager/cert-manager@$(CERT_MANAGER_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p')/deploy/crds" \
		go test -count=1 ./...
	REPLICANT_E2E=1 go test -count=1 -timeout 60m -v ./test/e2e/
	go test -run '^$$' -fuzz FuzzAnnotations -fuzztime 15s ./inject/
	go test -run '^$$' -fuzz FuzzGTIDSet -fuzztime 10s ./mysql/

## unit: only the tests that need neither a control plane nor a server
unit:
	go test -count=1 -run 'Test(Mutate|Parse|Flavor|Refusals|Unlabelled|Default|Opt|User|Unrelated|NewReplicant|Server(Image)?|Ordinal|Fragment|WriteConfig|Copy|Compare)' ./inject/ ./sidecar/ ./mysql/

## lint: gofmt, go vet, tidy modules
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	go vet ./...
	go mod tidy -diff

## deps: Debian packages the tests need, installed only when missing
deps:
	@missing=""; \
	for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

## k8s-bins: the Kubernetes binaries built from the Kubernetes module, plus Debian's etcd
k8s-bins: deps
	@hack/k8s-bins.sh $(K8S_VERSION) $(K8S_DIR) $(K8S_BINS)
	@mkdir -p bin/k8s && ln -sfn $(K8S_DIR) bin/k8s/$(K8S_VERSION) && ln -sfn k8s/$(K8S_VERSION)/kubectl bin/kubectl

## tools: helm, built from its module
tools: helm rclone
helm:
	@if [ ! -x $(HELM_BIN) ]; then \
		echo "helm: building $(HELM_VERSION) from its module (~3 min cold)"; start=$$(date +%s); \
		GOBIN=$(dir $(HELM_BIN)) CGO_ENABLED=0 go install -trimpath -ldflags "\
			-X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
			-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(k8s_minor) \
			-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(k8s_minor)" \
			helm.sh/helm/v3/cmd/helm@$(HELM_VERSION) && \
		echo "helm: built in $$(( $$(date +%s) - start ))s: $(HELM_BIN)"; \
	fi
	@mkdir -p bin && ln -sfn $(HELM_BIN) bin/helm

## rclone: the S3-compatible server the backup tests store to (rclone serve s3), built
## from its module
rclone:
	@if [ ! -x $(RCLONE_BIN) ]; then \
		echo "rclone: building $(RCLONE_VERSION) from its module (~3 min cold)"; start=$$(date +%s); \
		GOBIN=$(dir $(RCLONE_BIN)) CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" github.com/rclone/rclone@$(RCLONE_VERSION) && \
		echo "rclone: built in $$(( $$(date +%s) - start ))s: $(RCLONE_BIN)"; \
	fi
	@mkdir -p bin && ln -sfn $(RCLONE_BIN) bin/rclone

## mysql-rootfs: the root filesystem real mysqld runs from in package tests (Debian sid
## debootstrapped, ~9 min cold, network bound)
mysql-rootfs: deps
	@test/cluster/mysql-rootfs.sh $(MYSQL_ROOTFS)
	@mkdir -p bin && ln -sfn $(MYSQL_ROOTFS) bin/mysql-rootfs

## bench: admission latency (p50/p99); a 1 GiB clone through replicant versus a bare
## mariadb-backup | mbstream pipe, and a MySQL one versus a bare CLONE INSTANCE (ratios;
## REPLICANT_BENCH_MIB sets the size); a backup to
## and a restore from rclone's S3 server versus bare zstd/rclone pipes, on MariaDB and MySQL (ratios); failover
## (SIGKILL -> writable) and takeover writes-blocked over 10 rounds (REPLICANT_BENCH_ROUNDS,
## REPLICANT_BENCH_PROBE_INTERVAL, REPLICANT_BENCH_WRITE_LEASE)
bench: deps rclone
	go test -run '^$$' -bench . -benchmem -benchtime 5000x ./inject/ ./webhook/
	go test -run '^$$' -bench 'CloneVersusPipe|CloneInstanceVersusBareClone' -benchtime 1x -timeout 30m ./sidecar/
	go test -run '^$$' -bench BackupAndRestoreVersusPipe -benchtime 1x -timeout 30m ./backup/
	go test -run '^$$' -bench FailoverAndTakeover -benchtime 1x -timeout 30m ./failover/
	go test -run '^$$' -bench ManyClusters -benchtime 1x -timeout 40m ./failover/

## sim: the failover simulation over many more random schedules than make test's
## 100,000 (REPLICANT_SIM_SCHEDULES, default 3,000,000; REPLICANT_SIM_SEED replays one)
sim:
	REPLICANT_SIM_SCHEDULES=$${REPLICANT_SIM_SCHEDULES:-3000000} go test -count=1 -v -timeout 4h -run TestSimulatedSchedulesKeepTheInvariants ./failover/

## fuzz: longer fuzz runs of the annotation parser and the GTID set type
fuzz:
	go test -run '^$$' -fuzz FuzzAnnotations -fuzztime 2m ./inject/
	go test -run '^$$' -fuzz FuzzGTIDSet -fuzztime 2m ./mysql/

## cluster-build: everything the local cluster runs (CoreDNS, cert-manager, images)
cluster-build: deps
	@# Four Go builds at once (each spends part of its time resolving modules and
	@# linking on one core), beside the MySQL debootstrap (network bound).
	@$(MAKE) --no-print-directory -j5 build k8s-bins helm rclone mysql-rootfs
	@CACHE=$(CACHE) COREDNS_VERSION=$(COREDNS_VERSION) CERT_MANAGER_VERSION=$(CERT_MANAGER_VERSION) RCLONE_VERSION=$(RCLONE_VERSION) \
		REPLICANT_IMAGE=$(REPLICANT_IMAGE) test/cluster/build.sh

## demo: a real single-node cluster, replicant installed from manifests/, the whole job
## shown step by step. KEEP=1 leaves the cluster running (make demo-down removes it);
## FLAVOR=mysql shows it on MySQL 9.7 (docs/examples/mysql.yaml).
demo: cluster-build
	@KEEP=$(KEEP) FLAVOR=$(FLAVOR) hack/demo.sh

demo-down:
	@test/cluster/cluster.sh down

## e2e: the end-to-end suite (ginkgo) on a fresh local cluster, removed afterwards
## (REPLICANT_E2E_KEEP=1 keeps it); also part of make test
e2e: cluster-build
	REPLICANT_E2E=1 go test -count=1 -timeout 60m -v ./test/e2e/

clean:
	rm -rf bin
