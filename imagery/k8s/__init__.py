"""The pipeline on Kubernetes: each team's objects rendered by Helm from deploy/helm/ and deploy/teams.yaml
(render), checked offline against Kubernetes's schemas, the operators' CRDs and the project's rules (crds, validate),
its secret files as Secrets (secrets), a sizing model from measured figures (sizing), and the single-node cluster
`make test-k8s` builds and runs them on (control_plane, node). docs/kubernetes.md."""
