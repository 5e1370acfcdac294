"""Pinned versions of the parts the local stack installs: the one place each is defined.

The Flink connector jars are pinned in streaming/flink/connectors.txt; apache-flink itself in pyproject.toml
(a unit test checks that FLINK_VERSION below and the installed wheel agree).
"""

KAFKA_VERSION = "4.2.2"  # org.apache.kafka:kafka_2.13 on Maven Central, KRaft
MINIO_MODULE = "github.com/minio/minio"
# upstream publishes source only now: a pseudo-version of a pinned commit, built with `go install`
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
FLINK_VERSION = "2.2.1"
HELM_MODULE = "helm.sh/helm/v4"  # renders deploy/helm/'s charts (`imagery k8s render`); built with `go install`
HELM_VERSION = "v4.3.2"
# The Flink Kubernetes Operator whose CRD schemas deploy/k8s/crds/ holds (deploy/k8s/crds/sources.yaml says where
# each file came from): the newest whose flink-kubernetes-operator-api jar Maven Central serves here
FLINK_OPERATOR_VERSION = "1.10.0"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"  # github.com/prometheus-operator/prometheus-operator: its monitor CRDs
KUBERNETES_VERSION = "v1.34.2"  # k8s.io/kubernetes module; kube-apiserver and kubectl built from it (`make test-k8s`)
ETCD_DEBIAN_PACKAGE = "etcd-server"  # Debian bookworm's etcd, unpacked into the cache (not installed system-wide)
ETCD_VERSION = "3.4.23"  # upstream version of ETCD_DEBIAN_PACKAGE (Debian 3.4.23-4+b4); the download must match
CNI_PLUGINS_VERSION = "v1.10.0"  # github.com/containernetworking/plugins: bridge, host-local, loopback, portmap
