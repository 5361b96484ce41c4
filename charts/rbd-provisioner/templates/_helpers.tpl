{{/* Name of the chart's objects: with the release name "rbd-provisioner" they are those of
manifests/ (rbd-provisioner, rbd-provisioner-secrets, rbd-provisioner-metrics, ...). */}}
{{- define "rbd-provisioner.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Namespace of the namespaced objects: the value, else the release's. */}}
{{- define "rbd-provisioner.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* The pods' selector (as manifests/: app=<name>); never changes across upgrades. */}}
{{- define "rbd-provisioner.selectorLabels" -}}
app: {{ include "rbd-provisioner.fullname" . }}
{{- end -}}

{{- define "rbd-provisioner.labels" -}}
{{ include "rbd-provisioner.selectorLabels" . }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Lease the provisioner elects through, as crates/domain/src/lease.rs names it:
rbd-provisioner-<provisioner name, lowercased, non-alphanumerics as "-", trimmed of "-">. */}}
{{- define "rbd-provisioner.leaseName" -}}
{{- printf "rbd-provisioner-%s" (regexReplaceAll "[^a-z0-9]" (lower .Values.provisionerName) "-" | trunc 200 | trimAll "-") -}}
{{- end -}}

{{/* The ServiceAccount's subject, for every binding. */}}
{{- define "rbd-provisioner.subject" -}}
- kind: ServiceAccount
  name: {{ include "rbd-provisioner.fullname" . }}
  namespace: {{ include "rbd-provisioner.namespace" . }}
{{- end -}}

{{/* Checks JSON Schema cannot express (it cannot compare two values), and a second line for
installs with --skip-schema-validation. */}}
{{- define "rbd-provisioner.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) -}}
{{- fail (printf "replicas is %d but leaderElection.enabled is false: replicas without leader election would all act at once; set replicas: 1 or leaderElection.enabled: true" (int .Values.replicas)) -}}
{{- end -}}
{{- range .Values.storageClasses -}}
{{- $class := .name -}}
{{- $p := default dict .parameters -}}
{{- /* adminSecretNamespace defaults to "default" (crates/domain/src/params.rs); the user
Secret's, when absent, is the claim's namespace, which no list can foresee. */ -}}
{{- $needed := list (dict "key" "adminSecretNamespace" "ns" (default "default" (get $p "adminSecretNamespace"))) -}}
{{- range $key := list "userSecretNamespace" "csiNodeStageSecretNamespace" -}}
{{- if get $p $key -}}
{{- $needed = append $needed (dict "key" $key "ns" (get $p $key)) -}}
{{- end -}}
{{- end -}}
{{- range $needed -}}
{{- if not (has .ns $.Values.secretNamespaces) -}}
{{- fail (printf "storageClasses: class %q reads Secrets in namespace %q (its %s), which secretNamespaces does not list, so the provisioner could not read them: add %q to secretNamespaces" $class .ns .key .ns) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespace of ceph-csi's ConfigMap: cephCsiConfig.namespace, else the chart's. */}}
{{- define "rbd-provisioner.cephCsiConfigNamespace" -}}
{{- .Values.cephCsiConfig.namespace | default (include "rbd-provisioner.namespace" .) -}}
{{- end -}}
