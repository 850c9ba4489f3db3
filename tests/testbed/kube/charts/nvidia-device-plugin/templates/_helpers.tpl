{{- define "nvidia-device-plugin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nvidia-device-plugin.fullname" -}}
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

{{- define "nvidia-device-plugin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nvidia-device-plugin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "nvidia-device-plugin.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "nvidia-device-plugin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nvidia-device-plugin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/* Name of the ConfigMap holding the named configs ("" when there is none). */}}
{{- define "nvidia-device-plugin.configMapName" -}}
{{- if .Values.config.name }}
{{- .Values.config.name }}
{{- else if .Values.config.map }}
{{- printf "%s-configs" (include "nvidia-device-plugin.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The default config: config.default if set; otherwise the fallback strategies in order:
"named" picks a key literally called "default", "single" the only key, "empty" none.
*/}}
{{- define "nvidia-device-plugin.configDefault" -}}
{{- if .Values.config.default }}
{{- .Values.config.default }}
{{- else if .Values.config.map }}
{{- $chosen := "" }}
{{- $done := false }}
{{- range .Values.config.fallbackStrategies }}
{{- if not $done }}
{{- if and (eq . "named") (hasKey $.Values.config.map "default") }}
{{- $chosen = "default" }}{{- $done = true }}
{{- else if and (eq . "single") (eq (len $.Values.config.map) 1) }}
{{- $chosen = keys $.Values.config.map | first }}{{- $done = true }}
{{- else if eq . "empty" }}
{{- $done = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $done }}
{{- fail "Unable to determine the default config: set config.default, add a config named 'default', or pass exactly one config in config.map" }}
{{- end }}
{{- $chosen }}
{{- end }}
{{- end }}
