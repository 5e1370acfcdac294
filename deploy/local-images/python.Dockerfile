# imagery-local/python:3.11-bookworm — stands in for python:3.11-slim-bookworm where no registry is reachable.
# Debian bookworm's own Python 3.11 with venv; the host's CA bundle so that pip reaches PyPI through the
# host's TLS-inspecting proxy, if it has one.
FROM imagery-local/debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY host-ca.crt /etc/ssl/imagery-host-ca.crt
ENV SSL_CERT_FILE=/etc/ssl/imagery-host-ca.crt \
    PIP_CERT=/etc/ssl/imagery-host-ca.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/imagery-host-ca.crt \
    LANG=C.UTF-8
