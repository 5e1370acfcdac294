# imagery-local/flink:2.2.1-java17 — stands in for flink:2.2.1-java17 where no registry is reachable.
# The Flink distribution comes from the PyFlink wheel (it carries bin/, lib/, opt/ and conf/), installed in
# /opt/venv, which streaming/flink/Dockerfile then reuses; /opt/flink, the `flink` user (9999) and the
# entrypoint's `jobmanager` / `taskmanager` / FLINK_PROPERTIES behave as in the official image.
FROM imagery-local/java:17-bookworm
ARG FLINK_VERSION=2.2.1
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --progress-bar off "apache-flink==${FLINK_VERSION}" \
 && ln -s /opt/venv/lib/python3.11/site-packages/pyflink /opt/flink \
 && groupadd --system --gid=9999 flink \
 && useradd --system --home-dir /opt/flink --uid=9999 --gid=flink flink \
 && mkdir -p /opt/flink/log /opt/flink/plugins && chown -R flink:flink /opt/flink/ /opt/flink/log /opt/flink/conf
RUN cp /opt/flink/conf/config.yaml /opt/flink/conf/config.yaml.wheel
ENV FLINK_HOME=/opt/flink \
    PATH=/opt/flink/bin:$PATH
WORKDIR /opt/flink
COPY flink-entrypoint.sh /docker-entrypoint.sh
ENTRYPOINT ["/docker-entrypoint.sh"]
EXPOSE 6123 8081
CMD ["help"]
