#!/bin/bash
# The local MariaDB image's entrypoint: what replicant relies on from the official
# image's. An empty datadir with MARIADB_ROOT_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD)
# is initialised, optional MARIADB_DATABASE / MARIADB_USER / MARIADB_PASSWORD are created,
# then mariadbd is exec'ed as the mysql user with the arguments given (conf.d included
# through /etc/mysql/my.cnf).
set -euo pipefail

if [ "${1:-mariadbd}" != mariadbd ] && [ "${1:-}" != mysqld ] && [ "${1:0:1}" != - ]; then
  exec "$@"
fi
[ "${1:-}" = mariadbd ] || [ "${1:-}" = mysqld ] && shift

datadir=/var/lib/mysql
as_mysql=()
if [ "$(id -u)" = 0 ]; then
  chown mysql:mysql "$datadir" /run/mysqld 2>/dev/null || true
  as_mysql=(setpriv --reuid=mysql --regid=mysql --init-groups)
fi

if [ ! -d "$datadir/mysql" ]; then
  if [ -z "${MARIADB_ROOT_PASSWORD:-}" ] && [ -z "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:-}" ]; then
    echo "entrypoint: datadir is empty: set MARIADB_ROOT_PASSWORD (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD)" >&2
    exit 1
  fi
  echo "entrypoint: initialising $datadir"
  "${as_mysql[@]}" mariadb-install-db --datadir="$datadir" --skip-test-db --auth-root-authentication-method=normal \
    --skip-name-resolve --cross-bootstrap "$@" >/dev/null
  sql="SET @@SESSION.SQL_LOG_BIN=0;
DELETE FROM mysql.user WHERE user='' OR (user='root' AND host NOT IN ('localhost'));
CREATE USER 'root'@'%' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD:-}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MARIADB_ROOT_PASSWORD:-}';"
  if [ -n "${MARIADB_DATABASE:-}" ]; then
    sql+="CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
  fi
  if [ -n "${MARIADB_USER:-}" ]; then
    sql+="CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '${MARIADB_PASSWORD:-}';"
    [ -n "${MARIADB_DATABASE:-}" ] && sql+="GRANT ALL ON \`$MARIADB_DATABASE\`.* TO '$MARIADB_USER'@'%';"
  fi
  # A temporary server without networking applies the SQL, as the official image does.
  sock=/run/mysqld/init.sock
  "${as_mysql[@]}" mariadbd --datadir="$datadir" --skip-networking --socket="$sock" --skip-log-bin "$@" &
  pid=$!
  for _ in $(seq 60); do
    mariadb --protocol=socket --socket="$sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "$sql" | mariadb --protocol=socket --socket="$sock" -uroot ||
    { echo "entrypoint: initial SQL failed" >&2; kill "$pid"; exit 1; }
  kill "$pid" && wait "$pid" || true
  echo "entrypoint: initialised"
fi

exec "${as_mysql[@]}" mariadbd "$@"
