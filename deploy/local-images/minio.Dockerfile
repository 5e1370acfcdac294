# imagery-local/minio — stands in for minio/minio where no registry is reachable: the MinIO server the local
# stack built from its pinned commit with `go install` (imagery/local/versions.py). `mc ready local`, the
# compose health check, is answered by a small stand-in for mc that asks the server's readiness endpoint.
FROM imagery-local/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY minio /usr/bin/minio
COPY mc-ready.sh /usr/bin/mc
EXPOSE 9000 9001
ENTRYPOINT ["minio"]
