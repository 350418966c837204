#!/bin/bash
# The local MySQL image's entrypoint: what replicant relies on from the official
# image's. An empty datadir with MYSQL_ROOT_PASSWORD (or MYSQL_ALLOW_EMPTY_PASSWORD) is
# initialised, optional MYSQL_DATABASE / MYSQL_USER / MYSQL_PASSWORD are created, then
# mysqld is exec'ed as the mysql user with the arguments given (conf.d included through
# /etc/mysql/my.cnf).
set -euo pipefail

if [ "${1:-mysqld}" != mysqld ] && [ "${1:0:1}" != - ]; then
  exec "$@"
fi
[ "${1:-}" = mysqld ] && shift

datadir=/var/lib/mysql
as_mysql=()
if [ "$(id -u)" = 0 ]; then
  chown mysql:mysql "$datadir" /run/mysqld /var/lib/mysql-files 2>/dev/null || true
  as_mysql=(setpriv --reuid=mysql --regid=mysql --init-groups)
fi

if [ ! -d "$datadir/mysql" ]; then
  if [ -z "${MYSQL_ROOT_PASSWORD:-}" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
    echo "entrypoint: datadir is empty: set MYSQL_ROOT_PASSWORD (or MYSQL_ALLOW_EMPTY_PASSWORD)" >&2
    exit 1
  fi
  # As the official image: the initialisation and the temporary server read the same
  # configuration as the server (replicant's fragment lowers its fence for them).
  echo "entrypoint: initialising $datadir"
  "${as_mysql[@]}" mysqld --initialize-insecure --datadir="$datadir" "$@" ||
    { echo "entrypoint: mysqld --initialize-insecure failed" >&2; exit 1; }
  sql="SET @@SESSION.SQL_LOG_BIN=0;
DELETE FROM mysql.user WHERE user='' OR (user='root' AND host NOT IN ('localhost'));
CREATE USER 'root'@'%' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD:-}';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
ALTER USER 'root'@'localhost' IDENTIFIED BY '${MYSQL_ROOT_PASSWORD:-}';"
  if [ -n "${MYSQL_DATABASE:-}" ]; then
    sql+="CREATE DATABASE IF NOT EXISTS \`$MYSQL_DATABASE\`;"
  fi
  if [ -n "${MYSQL_USER:-}" ]; then
    sql+="CREATE USER '$MYSQL_USER'@'%' IDENTIFIED BY '${MYSQL_PASSWORD:-}';"
    [ -n "${MYSQL_DATABASE:-}" ] && sql+="GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$MYSQL_USER'@'%';"
  fi
  # A temporary server without networking applies the SQL, as the official image does.
  sock=/run/mysqld/init.sock
  "${as_mysql[@]}" mysqld --datadir="$datadir" --skip-networking --socket="$sock" --mysqlx=OFF "$@" &
  pid=$!
  for _ in $(seq 120); do
    mysql --protocol=socket --socket="$sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  echo "$sql" | mysql --protocol=socket --socket="$sock" -uroot ||
    { echo "entrypoint: initial SQL failed" >&2; kill "$pid"; exit 1; }
  kill "$pid" && wait "$pid" || true
  echo "entrypoint: initialised"
fi

exec "${as_mysql[@]}" mysqld "$@"
