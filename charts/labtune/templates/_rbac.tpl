{{/*
The operator's permissions. They must equal deploy/rbac/ (tests/integration/test_chart.py renders
the chart and compares): change both together.

"labtune.rbac.namespaced": the labtune.io resources, child Jobs, their ConfigMaps and Services,
pods (progress and termination summaries) and Events. Never Secrets: credentials are mounted into
job pods only.
*/}}
{{- define "labtune.rbac.namespaced" -}}
- apiGroups: [labtune.io]
  resources: [taxonomies, syntheticdataruns, tuningjobs, labpipelines]
  verbs: [get, list, watch, patch]
# A LabPipeline stamps a SyntheticDataRun and a TuningJob per revision and deletes old ones.
- apiGroups: [labtune.io]
  resources: [syntheticdataruns, tuningjobs]
  verbs: [create, delete]
- apiGroups: [labtune.io]
  resources: [taxonomies/status, syntheticdataruns/status, tuningjobs/status, labpipelines/status]
  verbs: [get, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
# A Job in a Kueue LocalQueue: the operator reads why Kueue holds it and suspends it through its Workload.
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [get, list, patch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, create]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
# list: kubelet reports a Secret or ConfigMap volume it cannot mount only as a pod Event.
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch, list]
{{- end -}}

{{/* Cluster-scoped: kopf discovers the resources it serves from their CRDs, even when it watches
only some namespaces. */}}
{{- define "labtune.rbac.cluster" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
# kopf lists and watches namespaces to find those it serves; without it a namespaced operator retries
# for about a minute before falling back and reconciling (seen on the dev cluster's real node).
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}

{{/*
"labtune.rbac.leaderElection": the leader Lease in the operator's own namespace (a Role there).
*/}}
{{- define "labtune.rbac.leaderElection" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
{{- end }}
