# imagery-local/prometheus — stands in for prom/prometheus:v2.42.0 where no registry is reachable: Debian bookworm's
# prometheus package (2.42, the version ops/prometheus/alerts.yml is tested with), same entrypoint, user and paths.
FROM imagery-local/debian:bookworm
# the package's init scripts must not start a daemon during the build
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
 && apt-get update && apt-get install -y --no-install-recommends prometheus && rm -rf /var/lib/apt/lists/* \
 && rm /usr/sbin/policy-rc.d && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
