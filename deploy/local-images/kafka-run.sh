#!/bin/bash
# KAFKA_FOO_BAR=x becomes foo.bar=x (`__` -> `_`, `___` -> `-`), as in the official apache/kafka image.
set -e
props=/tmp/server.properties
: > "$props"
skip=" KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_LOG4J_OPTS KAFKA_GC_LOG_OPTS KAFKA_JMX_OPTS KAFKA_VERSION "
while IFS='=' read -r name value; do
  [[ $name == KAFKA_* && $skip != *" $name "* ]] || continue
  key=${name#KAFKA_}; key=${key,,}; key=${key//___/-}; key=${key//__/@}; key=${key//_/.}; key=${key//@/_}
  echo "$key=$value" >> "$props"
done < <(env)
grep -q '^log.dirs=' "$props" || echo "log.dirs=/var/lib/kafka/data" >> "$props"
log_dir=$(sed -n 's/^log.dirs=//p' "$props" | cut -d, -f1)
cp="/opt/kafka/libs/*"
java_opts=(${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -XX:+UseG1GC -Djava.awt.headless=true)
if [ ! -f "$log_dir/meta.properties" ]; then
  java "${java_opts[@]}" -cp "$cp" kafka.tools.StorageTool format --ignore-formatted \
    -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$props"
fi
exec java "${java_opts[@]}" -cp "$cp" kafka.Kafka "$props"
