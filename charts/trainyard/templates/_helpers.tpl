{{- define "trainyard.labels" -}}
app.kubernetes.io/name: trainyard
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
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
  verbs: ["create"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
