{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "ocrm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every object: the release name when it already contains the chart name, so
release "origin-region-operator" gives "origin-region-operator" (predictable RBAC names).
*/}}
{{- define "ocrm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ocrm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "ocrm.labels" -}}
helm.sh/chart: {{ include "ocrm.chart" . }}
{{ include "ocrm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: origin-region-operator
{{- end }}

{{/*
Labels the Deployment, Service and PodDisruptionBudget select on (immutable once installed).
*/}}
{{- define "ocrm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ocrm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ocrm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ocrm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator-wide credentials Secret (in the release namespace): the one the chart creates
from credentials.apiToken, else credentials.existingSecret.
*/}}
{{- define "ocrm.credentialsSecretName" -}}
{{- if .Values.credentials.apiToken }}
{{- printf "%s-credentials" (include "ocrm.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Values.credentials.existingSecret }}
{{- end }}
{{- end }}

{{- define "ocrm.leaseName" -}}
{{- default (include "ocrm.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "ocrm.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Subject of every binding.
*/}}
{{- define "ocrm.subject" -}}
- kind: ServiceAccount
  name: {{ include "ocrm.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/*
Rules for the watched namespaces (cluster-wide, or watchNamespace only). No wildcards.
*/}}
{{- define "ocrm.watchRules" -}}
- apiGroups: ["originregions.io"]
  resources: ["origincloudregionmappings"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["originregions.io"]
  resources: ["origincloudregionmappings/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.credentials.perNamespaceSecrets }}
# credentials.perNamespaceSecrets: Secrets named by spec.credentialsSecretRef.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}
