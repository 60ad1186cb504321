#!/usr/bin/env bash
# Real Hadoop services and an S3-compatible server on 127.0.0.1, for the tests and for trying the pipeline on
# HDFS, YARN and S3 without a cluster:
#   hdfs  NameNode + DataNode (MiniDFSCluster)           one JVM   scripts/hadoop/LocalHadoop.java hdfs
#   yarn  ResourceManager + NodeManager (MiniYARNCluster) one JVM  scripts/hadoop/LocalHadoop.java yarn
#   s3    moto's S3 server (PyPI moto[server]) with one bucket. Chosen over S3Proxy 3.0.0 (Maven Central) because
#         moto honours If-None-Match: * atomically on PUT and on CompleteMultipartUpload; S3Proxy's check races and it
#         ignores the header on CompleteMultipartUpload (docs/hadoop_local.md has the evidence).
#
# Usage: scripts/hadoop_local.sh start|stop|status|env
#   start   starts what is not running, waits until each service answers, writes STATE/conf (a HADOOP_CONF_DIR),
#           STATE/spark-s3.conf (--conf lines for s3a), STATE/env.sh (exports), STATE/status.txt
#   stop    kills exactly the recorded pids (SIGTERM, then SIGKILL after a grace period)
#   status  pid, port, RSS of each service; exit 1 when any is down
#   env     prints the exports of STATE/env.sh (eval "$(scripts/hadoop_local.sh env)")
#   conf    only writes the client files above (no service started): what a Spark session needs at its start
#   dfs ARGS  Hadoop's FsShell on the local HDFS (`hdfs dfs ARGS` without a Hadoop install), e.g. dfs -ls -R /
#   spark-archive  uploads pyspark's jars once to hdfs:///spark/ and prints the spark.yarn.archive value
# STATE is $HADOOP_LOCAL_DIR (default out/hadoop-local). Ports are fixed so a HADOOP_CONF_DIR stays valid across
# restarts; each has an env override (below), e.g. for two checkouts on one machine. HADOOP_LOCAL_SERVICES picks a
# subset ("hdfs s3", default "hdfs yarn s3"). Java 17 and scripts/fetch_jars.sh's .jars/ are needed; the S3 server
# runs from $PYTHON (default the repository's .venv), which needs moto[server] (pip install -e '.[test]').
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STATE=${HADOOP_LOCAL_DIR:-$REPO/out/hadoop-local}
JARS=${JARS_DIR:-$REPO/.jars}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
SERVICES=${HADOOP_LOCAL_SERVICES:-hdfs yarn s3}
START_TIMEOUT=${HADOOP_LOCAL_START_TIMEOUT:-180}

# Ports: the Hadoop defaults with a leading 1, so a real Hadoop install on the same machine does not collide.
# HADOOP_LOCAL_PORT_OFFSET moves them all (e.g. 1000 for a second checkout on a shared machine, with its own
# HADOOP_LOCAL_DIR); each port also has its own override.
OFFSET=${HADOOP_LOCAL_PORT_OFFSET:-0}
NN_PORT=${HDFS_NN_PORT:-$((19820 + OFFSET))}
NN_HTTP_PORT=${HDFS_NN_HTTP_PORT:-$((19870 + OFFSET))}
DN_PORT=${HDFS_DN_PORT:-$((19866 + OFFSET))}
DN_IPC_PORT=${HDFS_DN_IPC_PORT:-$((19867 + OFFSET))}
DN_HTTP_PORT=${HDFS_DN_HTTP_PORT:-$((19864 + OFFSET))}
RM_PORT=${YARN_RM_PORT:-$((18032 + OFFSET))}
RM_SCHEDULER_PORT=${YARN_RM_SCHEDULER_PORT:-$((18030 + OFFSET))}
RM_TRACKER_PORT=${YARN_RM_TRACKER_PORT:-$((18031 + OFFSET))}
RM_ADMIN_PORT=${YARN_RM_ADMIN_PORT:-$((18033 + OFFSET))}
RM_WEB_PORT=${YARN_RM_WEB_PORT:-$((18088 + OFFSET))}
NM_PORT=${YARN_NM_PORT:-$((18041 + OFFSET))}
NM_LOCALIZER_PORT=${YARN_NM_LOCALIZER_PORT:-$((18040 + OFFSET))}
NM_WEB_PORT=${YARN_NM_WEB_PORT:-$((18042 + OFFSET))}
S3_PORT=${S3_PORT:-$((19000 + OFFSET))}
S3_BUCKET=${S3_BUCKET:-mfspark}
# moto accepts any credentials; these are what the Spark settings and tests send.
S3_ACCESS_KEY=${S3_ACCESS_KEY:-mfspark}
S3_SECRET_KEY=${S3_SECRET_KEY:-mfspark-secret}
# Heaps: the services are small; Spark's own containers are separate processes sized by YARN.
HDFS_HEAP=${HDFS_HEAP:-512m}
YARN_HEAP=${YARN_HEAP:-512m}
YARN_NM_MEMORY_MB=${YARN_NM_MEMORY_MB:-8192}

HOST=127.0.0.1
FS_DEFAULT=hdfs://$HOST:$NN_PORT
S3_ENDPOINT=http://$HOST:$S3_PORT

log() { echo "hadoop_local: $*" >&2; }

pid_of() {  # the recorded pid of a service if that process is alive, else nothing
  local file=$STATE/$1.pid
  [ -f "$file" ] || return 0
  local pid; pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

rss_mb() { awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$1/status" 2>/dev/null || echo "?"; }

find_java() {
  if [ -n "${JAVA_HOME:-}" ]; then echo "$JAVA_HOME/bin/java"; else command -v java; fi
}

write_conf() {  # HADOOP_CONF_DIR: what a client (Spark, hdfs CLI) needs to reach these services
  local conf=$STATE/conf
  mkdir -p "$conf"
  cat > "$conf/core-site.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by scripts/hadoop_local.sh: the local HDFS is the default filesystem. -->
<configuration>
  <property><name>fs.defaultFS</name><value>$FS_DEFAULT</value></property>
</configuration>
EOF
  cat > "$conf/hdfs-site.xml" <<EOF
<?xml version="1.0"?>
<!-- One DataNode: replication 1, and no search for a replacement node when a write pipeline fails. -->
<configuration>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.client.block.write.replace-datanode-on-failure.policy</name><value>NEVER</value></property>
</configuration>
EOF
  cat > "$conf/yarn-site.xml" <<EOF
<?xml version="1.0"?>
<!-- The local ResourceManager (scripts/hadoop_local.sh). -->
<configuration>
  <property><name>yarn.resourcemanager.hostname</name><value>$HOST</value></property>
  <property><name>yarn.resourcemanager.address</name><value>$HOST:$RM_PORT</value></property>
  <property><name>yarn.resourcemanager.scheduler.address</name><value>$HOST:$RM_SCHEDULER_PORT</value></property>
  <property><name>yarn.resourcemanager.resource-tracker.address</name><value>$HOST:$RM_TRACKER_PORT</value></property>
  <property><name>yarn.resourcemanager.admin.address</name><value>$HOST:$RM_ADMIN_PORT</value></property>
  <property><name>yarn.resourcemanager.webapp.address</name><value>$HOST:$RM_WEB_PORT</value></property>
</configuration>
EOF
  # s3a settings as spark-submit --conf lines (a properties file: `spark-submit --properties-file` reads it too).
  local s3a_jars
  s3a_jars=$(find "$JARS/s3a" -name '*.jar' 2>/dev/null | sort | paste -sd, -)
  cat > "$STATE/spark-s3.conf" <<EOF
spark.jars $s3a_jars
spark.hadoop.fs.s3a.endpoint $S3_ENDPOINT
spark.hadoop.fs.s3a.endpoint.region us-east-1
spark.hadoop.fs.s3a.path.style.access true
spark.hadoop.fs.s3a.connection.ssl.enabled false
spark.hadoop.fs.s3a.access.key $S3_ACCESS_KEY
spark.hadoop.fs.s3a.secret.key $S3_SECRET_KEY
spark.hadoop.fs.s3a.aws.credentials.provider org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider
EOF
  # The same settings as Spark's defaults file: SPARK_CONF_DIR=$STATE/spark-conf gives them to every Spark
  # session (mfspark commands included) without --conf lines.
  mkdir -p "$STATE/spark-conf"
  cp "$STATE/spark-s3.conf" "$STATE/spark-conf/spark-defaults.conf"
  cat > "$STATE/env.sh" <<EOF
# Written by scripts/hadoop_local.sh: source it to point Spark, the tests and the AWS CLI at the local services.
export HADOOP_CONF_DIR=$conf
export YARN_CONF_DIR=$conf
export MFSPARK_HDFS=$FS_DEFAULT
export MFSPARK_S3_ENDPOINT=$S3_ENDPOINT
export MFSPARK_S3_BUCKET=$S3_BUCKET
export MFSPARK_S3_SPARK_CONF=$STATE/spark-s3.conf
export SPARK_CONF_DIR=$STATE/spark-conf
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=$S3_ENDPOINT
EOF
}

start_java() {  # start_java ROLE HEAP PORTS...: one LocalHadoop JVM in the background, pid recorded
  local role=$1 heap=$2; shift 2
  local java; java=$(find_java) || { log "java not found (Java 17+ needed)"; return 1; }
  "$java" --list-modules 2>/dev/null | grep -q '^jdk.compiler' \
    || { log "$java is a JRE: the launcher runs as source and needs a JDK (apt-get install openjdk-17-jdk-headless)"; return 1; }
  mkdir -p "$STATE/$role"
  rm -f "$STATE/$role.ready"
  # cwd STATE/ROLE: the minicluster puts its work dirs under ./target. JAVA_HOME is exported because the
  # NodeManager hands it to containers (Spark's launch command is {{JAVA_HOME}}/bin/java).
  (
    cd "$STATE/$role"
    JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$java")")")} exec "$java" "-Xmx$heap" \
      -Dlog4j.configuration="file:$REPO/scripts/hadoop/log4j.properties" \
      -Dhadoop.root.logger="${HADOOP_LOCAL_LOG_LEVEL:-INFO},console" "$@" \
      -cp "$JARS/minicluster/*" "$REPO/scripts/hadoop/LocalHadoop.java" "$role" "$STATE" \
      > "$STATE/logs/$role.log" 2>&1 < /dev/null
  ) &
  echo $! > "$STATE/$role.pid"
}

start_s3() {
  "$PYTHON" -c 'import moto.server' 2>/dev/null \
    || { log "moto[server] is not installed in $PYTHON (pip install -e '.[test]')"; return 1; }
  # Data lives in the server's memory: a stop loses the bucket's objects (fine for tests; say so to users).
  (cd "$STATE" && exec "$PYTHON" -m moto.server -H "$HOST" -p "$S3_PORT" > "$STATE/logs/s3.log" 2>&1 < /dev/null) &
  echo $! > "$STATE/s3.pid"
}

s3_ready() {  # the server answers and the bucket exists (created here, idempotently)
  "$PYTHON" - "$S3_ENDPOINT" "$S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" <<'EOF' 2>/dev/null
import sys
import boto3
endpoint, bucket, key, secret = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name="us-east-1")
if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket=bucket)
EOF
}

is_ready() {  # ROLE's ready marker (java) or its bucket (s3) is there
  if [ "$1" = s3 ]; then s3_ready; else [ -f "$STATE/$1.ready" ]; fi
}

wait_ready() {  # wait_ready ROLE:T0...: poll all until each is ready (recording its seconds since T0) or one dies
  local pending=("$@") deadline=$((SECONDS + START_TIMEOUT)) entry role left
  while [ ${#pending[@]} -gt 0 ]; do
    left=()
    for entry in "${pending[@]}"; do
      role=${entry%%:*}
      if [ -z "$(pid_of "$role")" ]; then
        log "$role died while starting; last lines of $STATE/logs/$role.log:"
        tail -20 "$STATE/logs/$role.log" >&2
        return 1
      elif is_ready "$role"; then
        echo "$((SECONDS - ${entry#*:}))" > "$STATE/$role.start_seconds"
        log "$role ready in $(cat "$STATE/$role.start_seconds") s (pid $(pid_of "$role"), log $STATE/logs/$role.log)"
      else
        left+=("$entry")
      fi
    done
    pending=("${left[@]+"${left[@]}"}")
    [ ${#pending[@]} -eq 0 ] && break
    if [ $SECONDS -ge $deadline ]; then
      log "not ready after ${START_TIMEOUT}s: ${pending[*]%%:*} (logs in $STATE/logs)"
      return 1
    fi
    sleep 0.5
  done
}

ports_of() {
  case $1 in
    hdfs) echo "$NN_PORT $NN_HTTP_PORT $DN_PORT $DN_IPC_PORT $DN_HTTP_PORT" ;;
    yarn) echo "$RM_PORT $RM_SCHEDULER_PORT $RM_TRACKER_PORT $RM_ADMIN_PORT $RM_WEB_PORT $NM_PORT $NM_LOCALIZER_PORT $NM_WEB_PORT" ;;
    s3) echo "$S3_PORT" ;;
  esac
}

cmd_start() {
  mkdir -p "$STATE/logs"
  for jars in minicluster s3a; do
    [ -f "$JARS/$jars/.complete" ] || { log "$JARS/$jars missing: run scripts/fetch_jars.sh"; return 1; }
  done
  write_conf
  local t0=$SECONDS started=() role
  for role in $SERVICES; do
    if [ -n "$(pid_of "$role")" ]; then log "$role already running (pid $(pid_of "$role"))"; continue; fi
    local port
    for port in $(ports_of "$role"); do
      port_free "$port" || { log "port $port ($role) is in use by another process: set its env override"; return 1; }
    done
    local t=$SECONDS
    case $role in
      hdfs) start_java hdfs "$HDFS_HEAP" -Dport.nn="$NN_PORT" -Dport.nnhttp="$NN_HTTP_PORT" -Dport.dn="$DN_PORT" \
              -Dport.dnipc="$DN_IPC_PORT" -Dport.dnhttp="$DN_HTTP_PORT" ;;
      yarn) start_java yarn "$YARN_HEAP" -Dport.rm="$RM_PORT" -Dport.rmscheduler="$RM_SCHEDULER_PORT" \
              -Dport.rmtracker="$RM_TRACKER_PORT" -Dport.rmadmin="$RM_ADMIN_PORT" -Dport.rmweb="$RM_WEB_PORT" \
              -Dport.nm="$NM_PORT" -Dport.nmlocalizer="$NM_LOCALIZER_PORT" -Dport.nmweb="$NM_WEB_PORT" \
              -Dyarn.nm.memory.mb="$YARN_NM_MEMORY_MB" ;;
      s3) start_s3 ;;
      *) log "unknown service '$role' in HADOOP_LOCAL_SERVICES"; return 1 ;;
    esac
    started+=("$role:$t")
  done
  # The services start in parallel; each one's start time is measured on its own.
  if [ ${#started[@]} -gt 0 ] && ! wait_ready "${started[@]}"; then cmd_stop; return 1; fi
  [ ${#started[@]} -eq 0 ] || log "started ${started[*]%%:*} in $((SECONDS - t0)) s"
  cmd_status
  log "HADOOP_CONF_DIR=$STATE/conf; source $STATE/env.sh for the exports"
}

cmd_stop() {
  local role pid pids=()
  for role in s3 yarn hdfs; do
    pid=$(pid_of "$role")
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); log "stopping $role (pid $pid)"; fi
  done
  # Shutdown hooks stop the daemons cleanly in a few seconds; after 30 s the JVM is killed.
  local deadline=$((SECONDS + 30))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "pid $pid still alive after 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for role in s3 yarn hdfs; do rm -f "$STATE/$role.pid" "$STATE/$role.ready"; done
}

fs_shell() {  # Hadoop's FsShell (`hdfs dfs ...`) from the minicluster jars, on the local HDFS
  local java; java=$(find_java)
  "$java" -Xmx256m -cp "$STATE/conf:$JARS/minicluster/*" -Dlog4j.configuration="file:$REPO/scripts/hadoop/log4j.properties" \
    -Dhadoop.root.logger=WARN,console org.apache.hadoop.fs.FsShell "$@"
}

cmd_spark_archive() {
  # spark.yarn.archive: pyspark's jars/ as one uncompressed zip on HDFS, uploaded once per Spark version, so a submit
  # does not upload ~460 MB of jars (and YARN caches the localized archive on the NodeManager between apps).
  local py_jars version archive local_zip
  py_jars=$("$PYTHON" -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
  version=$("$PYTHON" -c 'import pyspark; print(pyspark.__version__)')
  archive=$FS_DEFAULT/spark/spark-jars-$version.zip
  if ! fs_shell -test -e "$archive" 2>/dev/null; then
    local_zip=$STATE/spark-jars-$version.zip
    rm -f "$local_zip"
    # Stored, not deflated: jars are compressed already. Python's zipfile: no `zip` binary needed.
    "$PYTHON" -c 'import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    for jar in sorted(pathlib.Path(sys.argv[2]).glob("*.jar")):
        z.write(jar, jar.name)' "$local_zip" "$py_jars"
    fs_shell -mkdir -p "$FS_DEFAULT/spark"
    fs_shell -put -f "$local_zip" "$archive.tmp"
    fs_shell -mv "$archive.tmp" "$archive"  # rename: a concurrent submit never sees half an archive
    rm -f "$local_zip"
    log "uploaded $archive ($(du -sh "$py_jars" | cut -f1) of jars)"
  fi
  # A properties file for `spark-submit --properties-file`: the archive, and every Spark endpoint on 127.0.0.1 (the
  # driver, AM and executors otherwise advertise the machine's other address).
  cat > "$STATE/spark-yarn.conf" <<EOF
spark.yarn.archive $archive
spark.driver.host $HOST
spark.yarn.appMasterEnv.SPARK_LOCAL_IP $HOST
spark.executorEnv.SPARK_LOCAL_IP $HOST
EOF
  echo "$STATE/spark-yarn.conf"
}

cmd_status() {
  local role pid down=0
  # The table goes through tee; the exit status is worked out here, not in tee's pipeline (a subshell).
  for role in $SERVICES; do [ -n "$(pid_of "$role")" ] || down=1; done
  {
    printf '%-5s %-8s %-9s %-8s %s\n' service pid rss_mb start_s ports
    for role in hdfs yarn s3; do
      pid=$(pid_of "$role")
      if [ -n "$pid" ]; then
        printf '%-5s %-8s %-9s %-8s %s\n' "$role" "$pid" "$(rss_mb "$pid")" \
          "$(cat "$STATE/$role.start_seconds" 2>/dev/null || echo ?)" "$(ports_of "$role")"
      else
        printf '%-5s %-8s\n' "$role" down
      fi
    done
    echo "fs.defaultFS=$FS_DEFAULT  yarn RM=$HOST:$RM_PORT (web http://$HOST:$RM_WEB_PORT)  s3=$S3_ENDPOINT bucket=$S3_BUCKET"
  } | tee "$STATE/status.txt"
  return $down
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) mkdir -p "$STATE"; cmd_status ;;
  env) cat "$STATE/env.sh" ;;
  conf) mkdir -p "$STATE"; write_conf; echo "$STATE" ;;
  dfs) shift; fs_shell "$@" ;;
  spark-archive) cmd_spark_archive ;;
  *) echo "usage: $0 start|stop|status|env|conf|dfs ARGS|spark-archive" >&2; exit 2 ;;
esac
