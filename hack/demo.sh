#!/usr/bin/env bash
# make demo: replicant's whole job on a real single-node cluster built on this machine,
# step by step, printing every command it runs (as the Presslabs walk-through does on
# minikube). KEEP=1 leaves the cluster running; `make demo-down` removes it.
# FLAVOR=mysql runs it on MySQL 9.7 (docs/examples/mysql.yaml) instead of MariaDB,
# without the MariaDB-only step (the 10.11 -> 11.8 upgrade).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/bin:$PATH"
cluster=test/cluster/cluster.sh
eval "$($cluster env)"
NS=default
APP_PW=demo-app-secret
FLAVOR=${FLAVOR:-mariadb}
case "$FLAVOR" in
  # STS the StatefulSet, SVC its headless Service, CONTAINER the server's container
  # and CLI the client in its image.
  mariadb) STS=db SVC=mysql CONTAINER=mariadb CLI=mariadb EXAMPLE=docs/examples/mariadb.yaml ;;
  mysql) STS=mydb SVC=mydb CONTAINER=mysql CLI=mysql EXAMPLE=docs/examples/mysql.yaml ;;
  *) echo "FLAVOR=$FLAVOR: allowed: mariadb, mysql" >&2; exit 2 ;;
esac
demo_started=$(date +%s)

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    echo; echo "demo FAILED (exit $rc)."
    kubectl get pods -A -o wide -L replicant.dev/role,replicant.dev/healthy 2>/dev/null || true
    $cluster diagnose || true
    echo "Component logs and diagnostics (manager, every container, events, statuses):"
    echo "  ${REPLICANT_CLUSTER_DIR:-/tmp/replicant-cluster}.logs after the cluster is removed"
  fi
  if [ "${KEEP:-}" = 1 ] && [ "$rc" = 0 ]; then
    echo; echo "The cluster keeps running. Try:"
    echo "  export KUBECONFIG=$KUBECONFIG PATH=$root/bin:\$PATH"
    echo "  kubectl get pods -L replicant.dev/role,replicant.dev/healthy"
    echo "  replicant -c topology -a $STS.$NS"
    echo "Remove it with: make demo-down"
  else
    $cluster down
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }
ms() { date +%s%3N; }
# sql HOST QUERY: as the application user (no SUPER: read_only applies to it), from the client pod.
sql() { kubectl exec client -- mariadb -h "$1" -uapp -p"$APP_PW" --connect-timeout=2 -N shop -e "$2"; }
# wait_for SECONDS WHAT CMD…
wait_for() {
  local limit=$1 what=$2; shift 2
  local end=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 1
  done
}
# settled N: N pods Ready, exactly one master, every other a healthy replica.
settled() {
  local want=$1 out
  out=$(kubectl get pods -l app=$STS -o jsonpath='{range .items[*]}{.metadata.labels.replicant\.dev/role}/{.metadata.labels.replicant\.dev/healthy}/{.status.containerStatuses[*].ready}{"\n"}{end}')
  [ "$(grep -c . <<<"$out")" = "$want" ] || return 1
  [ "$(grep -c '^master/yes/true true$' <<<"$out")" = 1 ] || return 1
  [ "$(grep -c '^replica/yes/true true$' <<<"$out")" = $(( want - 1 )) ]
}
master() { kubectl get pods -l app=$STS,replicant.dev/role=master -o jsonpath='{.items[0].metadata.name}'; }

step "0. A single-node Kubernetes cluster from this machine's own builds"
t=$(date +%s)
$cluster up
echo "cluster up in $(( $(date +%s) - t ))s"
run kubectl get nodes -o wide

step "Install replicant exactly as a user would (cert-manager issues the webhook's certificate)"
t=$(date +%s)
run kubectl apply -k manifests/
run kubectl -n replicant-system rollout status deployment/replicant --timeout=180s
wait_for 120 "the webhook's CA bundle (set by the manager from cert-manager's CA)" \
  test -n "$(kubectl get mutatingwebhookconfiguration replicant -o jsonpath='{.webhooks[0].clientConfig.caBundle}')"
echo "replicant installed in $(( $(date +%s) - t ))s"

step "1. A plain 3-replica $FLAVOR StatefulSet, labelled replicant.dev/inject=enabled"
run grep -n 'replicant\|image:' $EXAMPLE
run kubectl apply -f $EXAMPLE
echo "What the webhook injected into the stored template:"
run kubectl get statefulset $STS -o jsonpath='{range .spec.template.spec.initContainers[*]}init:    {.name}{"\n"}{end}{range .spec.template.spec.containers[*]}container: {.name}{"\n"}{end}{range .spec.template.spec.volumes[*]}volume:  {.name}{"\n"}{end}'
run kubectl get statefulset $STS -o jsonpath='{.spec.template.metadata.annotations}{"\n"}{.metadata.labels}{"\n"}'

step "2. Pods come up: $STS-0 starts empty, $STS-1 and $STS-2 clone"
t=$(date +%s)
wait_for 420 "3 pods: one master, two healthy replicas" settled 3
echo "3 pods settled in $(( $(date +%s) - t ))s"
for p in $STS-0 $STS-1 $STS-2; do run kubectl logs "$p" -c replicant-clone; done
run kubectl get pods -L replicant.dev/role,replicant.dev/healthy
run replicant -c topology -a $STS.$NS

step "3. Writes through $STS-master from a client pod, reads through $STS-replicas"
run kubectl run client --image=mariadb:10.11 --restart=Never --command -- sleep 3600
wait_for 60 "the client pod" kubectl wait --for=condition=Ready pod/client --timeout=1s
run sql $STS-master "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64), server VARCHAR(64))"
for i in $(seq 1 20); do sql $STS-master "INSERT INTO orders (note, server) VALUES ('step3-$i', @@hostname)"; done
echo "20 rows written through $STS-master"
sleep 1
run sql $STS-replicas "SELECT @@hostname AS replica, COUNT(*) AS orders FROM orders"

step "4. Graceful master takeover to $STS-1"
run replicant graceful-master-takeover -a $STS.$NS -d $STS-1
wait_for 60 "the old master back as a healthy replica" settled 3
run replicant topology -a $STS.$NS

# A writer in the client pod: one INSERT (a new connection each) every 100 ms,
# printing epoch-ms, ok/fail, the attempt and the server that took it (or the error).
writer() {
  kubectl exec client -- bash -c '
    for i in $(seq 1 '"$2"'); do
      if out=$(timeout 5 mariadb -h '"$STS"'-master -uapp -p'"$APP_PW"' --connect-timeout=1 -N shop \
          -e "INSERT INTO orders (note, server) VALUES (\"'"$1"'-$i\", @@hostname); SELECT @@hostname" 2>&1); then
        echo "$(date +%s%3N) ok $i $out"
      else
        echo "$(date +%s%3N) fail $i $(printf %s "$out" | tr "\n" " " | grep -o "ERROR.*" | cut -c1-100)"
      fi
      sleep 0.1
    done'
}
# failure_kinds LOG: how the refused writes failed. "read-only" came from a server
# that was no longer master but still behind the master Service until kube-proxy followed the
# label change; the others never reached a server.
failure_kinds() {
  local ro refused timeout other
  ro=$(grep -c ' fail .*read-only' "$1" || true)
  # With --connect-timeout the client reports a connect that fails at once (refused,
  # unreachable) as 115 (EINPROGRESS), one that times out as 110.
  refused=$(grep -c " fail .*Can't connect.* (11[15])" "$1" || true)
  timeout=$(grep -c " fail .*Can't connect.* (110)" "$1" || true)
  other=$(( $(grep -c ' fail ' "$1" || true) - ro - refused - timeout ))
  echo "$ro read-only, $refused connection refused, $timeout connect timeout, $other other"
}
acked_notes=""
# under_load PREFIX WHAT COMMAND…: runs COMMAND against the master while the writer
# runs, waits for a new master, and prints how long writes were refused.
under_load() {
  local prefix=$1 what=$2; shift 2
  local log=/tmp/replicant-demo-$prefix.log old new at first_fail back oks fails
  old=$(master)
  writer "$prefix" 200 >"$log" 2>&1 &
  local writer_pid=$!
  sleep 3
  at=$(ms)
  run "$@"
  wait_for 60 "a new master" bash -c "kubectl get pods -l app=$STS,replicant.dev/role=master -o name | grep -qv /$old"
  new=$(master)
  wait "$writer_pid" || true
  first_fail=$(awk -v t="$at" '$1 > t && $2 == "fail" {print $1; exit}' "$log")
  back=$(awk -v t="$at" -v old="$old" '$1 > t && $2 == "ok" && $4 != old {print $1; exit}' "$log")
  oks=$(grep -c ' ok ' "$log" || true)
  fails=$(grep -c ' fail ' "$log" || true)
  acked_notes+=$(awk -v p="$prefix" '$2 == "ok" {printf "\x27%s-%s\x27,", p, $3}' "$log")
  echo "$what: master $old -> $new."
  if [ -n "$first_fail" ]; then
    echo "  writes refused from $(( first_fail - at )) ms after the command; accepted through $STS-master again $(( back - at )) ms after it"
  else
    echo "  no write refused; the first write on $new came $(( back - at )) ms after the command"
  fi
  echo "  writer: $oks writes acknowledged, $fails refused (one attempt every 100 ms): $(failure_kinds "$log")"
}

step "5. The master pod is deleted under a steady write load"
echo "(its preStop hook holds the server until the controller has handed the master role over)"
old=$(master)
under_load delete "pod deleted" kubectl delete pod "$old" --wait=false
run kubectl get statefulset $STS -o jsonpath='{.metadata.annotations.replicant\.dev/last-operation}{"\n"}'
wait_for 240 "$old back as a healthy replica" settled 3
run kubectl logs "$old" -c replicant-clone
run replicant topology -a $STS.$NS

step "5b. The master's network is cut off for 25 s, with a client on each side"
echo "(every packet of its pod's network namespace but loopback dropped; one client writes through"
echo " $STS-master from outside, one from inside the master's pod to 127.0.0.1: commits there wait for"
echo " a replica that never answers, its write lease runs out and its sidecar fences it)"
old=$(master)
quarantined() { kubectl get pod "$old" -o jsonpath='{.metadata.annotations.replicant\.dev/status}' | grep -q errantGTIDs; }
back_or_quarantined() { settled 3 || quarantined; }
inside_log=/tmp/replicant-demo-inside.log
kubectl exec "$old" -c $CONTAINER -- bash -c 'end=$((SECONDS+40)); i=0; while [ $SECONDS -lt $end ]; do i=$((i+1))
  if timeout 5 '"$CLI"' -h127.0.0.1 -uapp -p'"$APP_PW"' --connect-timeout=1 -N shop \
      -e "INSERT INTO orders (note, server) VALUES (\"inside-$i\", @@hostname)" 2>/dev/null; then
    echo "$(date +%s%3N) ok $i"; else echo "$(date +%s%3N) fail $i"; fi; sleep 0.05; done' >"$inside_log" 2>&1 &
inside_pid=$!
sleep 2
cut_file=/tmp/replicant-demo-cut-at
cut() { ms >"$cut_file"; run "$cluster" partition "$NS" "$1" on; }
under_load cut "network cut" cut "$old"
cut_at=$(cat "$cut_file")
sleep $(( (cut_at + 25000 - $(ms)) / 1000 )) 2>/dev/null || true
run "$cluster" partition "$NS" "$old" off
wait "$inside_pid" || true
inside_before=$(awk -v t="$cut_at" '$2 == "ok" && $1 <= t' "$inside_log" | wc -l)
inside_after=$(awk -v t="$cut_at" '$2 == "ok" && $1 > t' "$inside_log" | wc -l)
acked_notes+=$(awk '$2 == "ok" {printf "\x27inside-%s\x27,", $3}' "$inside_log")
echo "inside client: $inside_before writes acknowledged before the cut, $inside_after after it (an isolated master acknowledges nothing)"
wait_for 240 "$old back as a replica (or quarantined)" back_or_quarantined
if quarantined; then
  echo "$old came back holding the commits its fence killed (never acknowledged): quarantined; re-clone it:"
  run kubectl delete pvc "data-$old" --wait=false
  run kubectl delete pod "$old"
  wait_for 240 "$old re-cloned as a healthy replica" settled 3
fi
run kubectl get events --field-selector reason=Failover -o custom-columns=MESSAGE:.message
run replicant topology -a $STS.$NS

step "5c. The master's node is lost: its server is killed and its pod force-deleted"
old=$(master)
# lose_node POD: the server stops answering (SIGKILL from the node, as a dead node
# stops it) and the pod object is removed (as the node lifecycle controller does).
# The node is cordoned first: as with a really lost node, the replacement pod cannot
# start until the node is back (here it would restart in place at once).
node=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
lose_node() { run kubectl cordon "$node" && run "$cluster" crash "$NS" "$1" $CONTAINER && run kubectl delete pod "$1" --grace-period=0 --force; }
# Within minutes of 5b's failover, the anti-flapping window holds the automatic one
# (a FailoverHeld Warning says why); a person asks, as orchestrator's users do.
held_anti_flap() { kubectl get events --field-selector reason=FailoverHeld -o jsonpath='{.items[*].message}' | grep -q anti-flapping; }
new_master_or_held() { { m=$(master) && [ -n "$m" ] && [ "$m" != "$old" ]; } || held_anti_flap; }
lose_node_then_ask() {
  lose_node "$1"
  wait_for 60 "a failover or a hold" new_master_or_held
  if ! { m=$(master) && [ -n "$m" ] && [ "$m" != "$old" ]; }; then
    run kubectl get events --field-selector reason=FailoverHeld -o custom-columns=MESSAGE:.message
    run replicant force-master-failover -a $STS.$NS
  fi
}
under_load force "node lost" lose_node_then_ask "$old"
echo "the node is back:"
run kubectl uncordon "$node"
wait_for 240 "$old back as a replica (or quarantined)" back_or_quarantined
if quarantined; then
  echo "$old came back holding a transaction no replica received (never acknowledged: semi-sync);"
  echo "it is quarantined, never overwritten. The way back is a re-clone:"
  run kubectl get events --field-selector reason=ErrantTransactions -o custom-columns=MESSAGE:.message
  run kubectl delete pvc "data-$old" --wait=false
  run kubectl delete pod "$old"
  wait_for 240 "$old re-cloned as a healthy replica" settled 3
fi
run kubectl get events --field-selector reason=Failover -o custom-columns=MESSAGE:.message
run kubectl logs "$old" -c replicant-clone
run kubectl get pods -L replicant.dev/role,replicant.dev/healthy
run replicant topology -a $STS.$NS

if [ "$FLAVOR" = mariadb ]; then
step "5d. MariaDB 10.11 -> 11.8 under a steady write load: replicas first, the master last by hand-over"
echo "(the webhook set updateStrategy OnDelete: replicant rolls the pods, one at a time, each once the last one replicates again)"
old=$(master)
log=/tmp/replicant-demo-upgrade.log
writer upgrade 900 >"$log" 2>&1 &
writer_pid=$!
sleep 3
at=$(ms)
run kubectl set image statefulset/$STS mariadb=mariadb:11.8
wait_for 300 "both versions in the topology" bash -c "replicant topology -a $STS.$NS | grep -q ',11\.8\.'"
run replicant topology -a $STS.$NS
upgraded() { settled 3 && ! replicant topology -a $STS.$NS | grep -q ',10\.11\.'; }
wait_for 600 "every server on 11.8" upgraded
took=$(( $(ms) - at ))
wait "$writer_pid" || true
run replicant topology -a $STS.$NS
run kubectl get events --field-selector reason=RollingUpdate -o custom-columns=MESSAGE:.message
run kubectl get statefulset $STS -o jsonpath='{.metadata.annotations.replicant\.dev/last-operation}{"\n"}'
acked_notes+=$(awk '$2 == "ok" {printf "\x27upgrade-%s\x27,", $3}' "$log")
echo "upgraded in $(( took / 1000 )) s; master $old -> $(master)."
echo "  writer: $(grep -c ' ok ' "$log" || true) writes acknowledged, $(grep -c ' fail ' "$log" || true) refused (one attempt every 100 ms): $(failure_kinds "$log")"
fi

step "6. Every acknowledged row is on every server"
want=$(( 20 + $(tr ',' '\n' <<<"$acked_notes" | grep -c .) ))
sleep 2
for p in $STS-0 $STS-1 $STS-2; do
  got=$(sql "$p.$SVC.$NS.svc.cluster.local" "SELECT COUNT(*) FROM orders WHERE note LIKE 'step3-%' OR note IN (${acked_notes%,})")
  echo "$p: $got of $want acknowledged rows"
  [ "$got" = "$want" ] || { echo "rows missing on $p"; exit 1; }
done
run sql $STS-master "SELECT server, COUNT(*) FROM orders GROUP BY server"
step "7. A backup to an S3 server in the cluster; a new StatefulSet restored to a point between two writes"
echo "(rclone's serve s3 as a pod; the backup Secret holds the keys the AWS SDK reads)"
run kubectl apply -f docs/examples/s3.yaml
run kubectl rollout status deployment/s3 --timeout=120s
bucket="s3://backups/demo?endpoint=http://s3.$NS.svc.cluster.local:9000&region=us-east-1&use_path_style=true"
run kubectl annotate statefulset $STS --overwrite "replicant.dev/backup-uri=$bucket" \
  replicant.dev/backup-secret=bucket-creds "replicant.dev/backup-schedule=0 3 * * *" replicant.dev/backup-retention=7
wait_for 60 "the CronJobs $STS-backup and $STS-binlogs" kubectl get cronjob $STS-backup $STS-binlogs
run kubectl get cronjobs
t=$(ms)
run replicant backup -a $STS.$NS
echo "backed up in $(( $(ms) - t )) ms"
# (`replicant backups -a` reads the bucket with your own credentials, from where you
# run it: this in-cluster S3 server is not reachable from the host.)
run sql $STS-master "INSERT INTO orders (note, server) VALUES ('after-the-backup', @@hostname)"
run sql $STS-master "INSERT INTO orders (note, server) VALUES ('before-the-point', @@hostname)"
point_s=$(( $(date +%s) + 2 ))
point=$(date -u -d "@$point_s" +%Y-%m-%dT%H:%M:%SZ)
sleep $(( point_s - $(date +%s) )); sleep 0.5
run sql $STS-master "INSERT INTO orders (note, server) VALUES ('after-the-point', @@hostname)"
want_pitr=$(sql $STS-master "SELECT COUNT(*) FROM orders WHERE note <> 'after-the-point'")
echo "the point: $point, after 'before-the-point' and before 'after-the-point' ($want_pitr rows before it)"
echo "the binlog archive runs every 5 minutes; one run now instead of waiting:"
run kubectl create job $STS-binlogs-demo --from=cronjob/$STS-binlogs
run kubectl wait --for=condition=complete job/$STS-binlogs-demo --timeout=180s
run kubectl logs job/$STS-binlogs-demo
image=$(kubectl get statefulset $STS -o jsonpath="{.spec.template.spec.containers[?(@.name==\"$CONTAINER\")].image}")
pitr_yaml=$(awk '/^apiVersion: apps\/v1/{p=1} p' $EXAMPLE | sed \
  -e "s/name: $STS\$/name: pitr/" -e "s/app: $STS\$/app: pitr/" -e "s/serviceName: $SVC\$/serviceName: pitr/" \
  -e 's/replicas: 3/replicas: 1/' -e "s|image: .*|image: $image|" \
  -e "s|^  name: pitr$|  name: pitr\n  annotations:\n    replicant.dev/init-uri: \"s3://backups/demo/$NS/$STS?endpoint=http://s3.$NS.svc.cluster.local:9000\&region=us-east-1\&use_path_style=true\"\n    replicant.dev/restore-to: \"$point\"\n    replicant.dev/backup-secret: bucket-creds|")
printf '%s\n' "$pitr_yaml" | sed -n '1,10p'
kubectl apply -f - <<YAML
apiVersion: v1
kind: Service
metadata:
  name: pitr
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app: pitr
  ports:
    - name: mysql
      port: 3306
---
$pitr_yaml
YAML
t=$(date +%s)
pitr_ready() { [ "$(kubectl get pod pitr-0 -o jsonpath='{.metadata.labels.replicant\.dev/role}/{.metadata.labels.replicant\.dev/healthy}')" = master/yes ]; }
wait_for 420 "pitr-0 restored and serving as a master" pitr_ready
echo "restored in $(( $(date +%s) - t ))s"
run kubectl logs pitr-0 -c replicant-clone
got=$(sql pitr-0.pitr.$NS.svc.cluster.local "SELECT COUNT(*) FROM orders")
after=$(sql pitr-0.pitr.$NS.svc.cluster.local "SELECT COUNT(*) FROM orders WHERE note = 'after-the-point'")
between=$(sql pitr-0.pitr.$NS.svc.cluster.local "SELECT COUNT(*) FROM orders WHERE note IN ('after-the-backup', 'before-the-point')")
echo "pitr-0: $got rows (want $want_pitr); written after the backup and before the point: $between of 2; after the point: $after"
[ "$got" = "$want_pitr" ] && [ "$between" = 2 ] && [ "$after" = 0 ] || { echo "the point-in-time restore is wrong"; exit 1; }

echo
echo "demo done in $(( $(date +%s) - demo_started ))s"
