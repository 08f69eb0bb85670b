{{/* The name of every namespaced object and of the cluster-scoped RBAC: the release name, or
<release>-trainyard when the release name does not say trainyard. */}}
{{- define "trainyard.fullname" -}}
{{- if contains "trainyard" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-trainyard" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What selects the operator's pod: stable for the life of a release (never the version). */}}
{{- define "trainyard.selectorLabels" -}}
app.kubernetes.io/name: trainyard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "trainyard.labels" -}}
{{ include "trainyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: trainyard
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "trainyard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "trainyard.serviceAccountName" -}}
{{ .Values.serviceAccount.name | default "trainyard" }}
{{- end -}}

{{/* Exactly what the operator does, nothing more. The cluster tests run the operator under
these rules, so a missing permission fails them. */}}
{{- define "trainyard.rules" -}}
- apiGroups: ["trainyard.dev"]
  resources: ["distributedtrainingjobs"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: ["trainyard.dev"]
  resources: ["distributedtrainingjobs/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "create"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "list"]
{{- /* Each job's progress Lease: the operator creates it, watches it, publishes worker 0's pod IP in
it (patch), and lets the job's ServiceAccount get and patch that one Lease (a Role with
resourceNames and its RoleBinding): granting needs no escalate or bind, because the operator holds
get and patch on leases itself. */}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create"]
{{ include "trainyard.kueueRules" . }}
{{- end -}}

{{/* Kueue (a job labelled kueue.x-k8s.io/queue-name): the operator makes and watches one Workload
per queued job, server-side applies PodsReady/Finished and releases an evicted reservation on its
status, and patches spec.active to follow suspend. Harmless where Kueue is not installed. */}}
{{- define "trainyard.kueueRules" -}}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads/status"]
  verbs: ["patch"]
{{- end -}}

{{/* ResourceFlavors are cluster-scoped: an admitted gang's placement is read from them. */}}
{{- define "trainyard.kueueClusterRules" -}}
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["resourceflavors"]
  verbs: ["get"]
{{- end -}}

{{/* Nodes are cluster-scoped: whatever namespaces it watches, the operator reads them, so that a
lost node's workers are replaced at once (not after pod garbage collection or taint eviction). */}}
{{- define "trainyard.nodeRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end -}}
