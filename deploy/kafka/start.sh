#!/bin/sh
# Start a KRaft node configured from the environment, as the apache/kafka image does: KAFKA_FOO_BAR
# becomes foo.bar (`__` is `_`, `___` is `-`); the JVM's own KAFKA_*_OPTS are not properties.
# Storage is formatted with CLUSTER_ID on the first start and kept on later ones.
set -eu
CONF=/opt/kafka/config/server.properties
[ -n "${CLUSTER_ID:-}" ] || { echo "kafka: CLUSTER_ID is not set" >&2; exit 1; }
: >"$CONF"
env | sort | while IFS='=' read -r name value; do
    case "$name" in
        KAFKA_HEAP_OPTS | KAFKA_OPTS | KAFKA_JVM_PERFORMANCE_OPTS | KAFKA_LOG4J_OPTS | KAFKA_GC_LOG_OPTS | KAFKA_JMX_OPTS) ;;
        KAFKA_*)
            key=$(printf '%s' "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
            printf '%s=%s\n' "$key" "$value" >>"$CONF" ;;
    esac
done
echo "kafka: server.properties:" && sed 's/^/  /' "$CONF"
CP='/opt/kafka/libs/*'
LOGS="-Dkafka.logs.dir=/opt/kafka/logs -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties"
# shellcheck disable=SC2086  # word splitting of the option lists is intended
java $LOGS -cp "$CP" kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" -c "$CONF"
# shellcheck disable=SC2086
exec java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} -XX:+UseG1GC -Djava.awt.headless=true $LOGS -cp "$CP" kafka.Kafka "$CONF"
