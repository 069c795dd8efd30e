{{/* The release's object names: "<release>" when it already names the chart, else "<release>-labtune". */}}
{{- define "labtune.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "labtune.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "labtune.labels" -}}
{{ include "labtune.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Who the RBAC bindings grant to: the operator's ServiceAccount. */}}
{{- define "labtune.subjects" -}}
- kind: ServiceAccount
  name: {{ include "labtune.fullname" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}
