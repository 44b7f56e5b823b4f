{{/*
Names, labels and the image reference of the hetsched chart.
*/}}

{{- define "hetsched.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: <release>-<chart>, or <release> when it already contains the chart name.
*/}}
{{- define "hetsched.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hetsched.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: stable for the life of the release (Deployment selectors are immutable).
*/}}
{{- define "hetsched.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hetsched.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
Common labels of every object of the chart.
*/}}
{{- define "hetsched.labels" -}}
helm.sh/chart: {{ include "hetsched.chart" . }}
{{ include "hetsched.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hetsched
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "hetsched.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hetsched.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "hetsched.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
Rules of the namespaced part of the operator's job (AgentWorkloads and their children). Granted
cluster-wide by the ClusterRole, or per watched namespace by a Role.
*/}}
{{- define "hetsched.namespacedRules" -}}
- apiGroups: ["hetsched.io"]
  resources: ["agentworkloads"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["hetsched.io"]
  resources: ["agentworkloads/status"]
  verbs: ["patch"]
- apiGroups: ["hetsched.io"]
  resources: ["agentworkloads/finalizers"]
  verbs: ["update"]
# get: before creating a child, whether an object of another owner already has its name.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The P/D router's Role (pods get/list/watch) and its RoleBinding. Kubernetes lets the operator
# create a Role or RoleBinding only with permissions it holds itself (no escalate/bind verbs).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Model configs: read, and watched so that an edit re-plans (only referenced ones are used).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
# Why a child Deployment stuck past the unschedulable grace period has Pending pods (list); get,
# list, watch are also what the P/D router's Role grants, which the operator may only grant holding them.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
{{- if .Values.operator.inferencePool.endpointPicker }}
# An InferencePool per workload (Gateway API Inference Extension), when its CRD is installed.
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["create", "patch", "delete"]
{{- end }}
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
