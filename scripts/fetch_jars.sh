#!/usr/bin/env bash
# Fetch the JVM artefacts for the local Hadoop services and the s3a connector from Maven Central into .jars/
# (git-ignored; no jar is ever committed):
#   .jars/minicluster/  hadoop-client-minicluster 3.5.0 + its runtime deps: MiniDFSCluster, MiniYARNCluster, for
#                       scripts/hadoop_local.sh (a JVM of its own, so it may repeat what pyspark ships).
#   .jars/s3a/          hadoop-aws 3.5.0 + the AWS SDK v2 modules it calls (BOM 2.59.1), minus whatever pyspark's
#                       jars/ already holds, so the folder can go on spark.jars as it is.
# Cached: a folder whose .complete stamp names the current pom's checksum is skipped (and ~/.m2 caches downloads).
# Usage: scripts/fetch_jars.sh [--force]; JARS_DIR overrides the destination.
set -euo pipefail
cd "$(dirname "$0")/.."
POM=scripts/hadoop/pom.xml
JARS_DIR=${JARS_DIR:-$PWD/.jars}

if ! command -v mvn >/dev/null 2>&1; then
  echo "mvn not found: installing Debian's maven"
  apt-get update -qq && apt-get install -y -qq maven >/dev/null
fi

stamp=$(sha256sum "$POM" | cut -d' ' -f1)
for set in minicluster s3a; do
  dest=$JARS_DIR/$set
  if [ "${1:-}" != --force ] && [ "$(cat "$dest/.complete" 2>/dev/null)" = "$stamp" ]; then
    echo "fetch_jars: $dest up to date ($(ls "$dest"/*.jar | wc -l) jars)"
    continue
  fi
  # Fill a temporary folder and swap it in, so an interrupted fetch never looks complete.
  rm -rf "$dest.partial"
  mvn -B -q -Dstyle.color=never -f "$POM" -P "$set" dependency:copy-dependencies -DoutputDirectory="$dest.partial" \
    -DincludeScope=runtime
  echo "$stamp" > "$dest.partial/.complete"
  rm -rf "$dest"
  mv "$dest.partial" "$dest"
  echo "fetch_jars: $dest: $(ls "$dest"/*.jar | wc -l) jars, $(du -sh "$dest" | cut -f1)"
done
