{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "rmserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources. */}}
{{- define "rmserve.fullname" -}}
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

{{- define "rmserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rmserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "rmserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "rmserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "rmserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rmserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: "-gpu" or "-cpu" after the appVersion unless a tag is given. */}}
{{- define "rmserve.image" -}}
{{- $tag := .Values.image.tag | default (printf "%s-%s" .Chart.AppVersion (ternary "gpu" "cpu" .Values.gpu.enabled)) }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* Name of the Secret holding RMSERVE_API_KEYS, empty when there are no keys. Fails the render
where the keys asked for would not protect the server (see rmserve.checkApiKeys). */}}
{{- define "rmserve.apiKeysSecret" -}}
{{- include "rmserve.checkApiKeys" . }}
{{- if .Values.apiKeys.existingSecret }}
{{- .Values.apiKeys.existingSecret }}
{{- else if .Values.apiKeys.keys }}
{{- include "rmserve.fullname" . }}-api-keys
{{- end }}
{{- end }}

{{/* Fail closed: a key setting that would leave the server open (or not starting) while keys were
asked for fails the render, with what to change. The server refuses the same settings at start
(an empty RMSERVE_API_KEYS, say), which covers what a render cannot see. */}}
{{- define "rmserve.checkApiKeys" -}}
{{- $apiKeys := .Values.apiKeys }}
{{- if and $apiKeys.keys $apiKeys.existingSecret }}
{{- fail "apiKeys: set keys or existingSecret, not both (keys would be ignored)" }}
{{- end }}
{{- range $index, $key := $apiKeys.keys }}
{{- /* Visible ASCII but the comma, which would split the key in two. */}}
{{- if not (regexMatch `^[\x21-\x2b\x2d-\x7e]+$` (toString $key)) }}
{{- fail (printf "apiKeys.keys[%d] is empty or holds a space, a comma or a non-ASCII character: the server would refuse it" $index) }}
{{- end }}
{{- end }}
{{- with $apiKeys.existingSecret }}
{{- $secretKey := required "apiKeys.existingSecretKey: name the key of apiKeys.existingSecret that holds the comma-separated API keys" $apiKeys.existingSecretKey }}
{{- /* Only an install or upgrade against a cluster sees the Secret; `helm template` gets nothing. */}}
{{- $secret := lookup "v1" "Secret" $.Release.Namespace . }}
{{- if $secret }}
{{- $value := get ($secret.data | default dict) $secretKey | b64dec }}
{{- $usable := false }}
{{- range splitList "," $value }}
{{- if trim . }}{{ $usable = true }}{{ end }}
{{- end }}
{{- if not $usable }}
{{- fail (printf "apiKeys.existingSecret: Secret %s has no API key under %q (missing, empty or only commas); the server would refuse to start" . $secretKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- $fileKeys := hasKey .Values.config "RMSERVE_API_KEYS_FILE" }}
{{- range .Values.extraEnv }}
{{- if eq (toString .name) "RMSERVE_API_KEYS" }}
{{- fail "extraEnv: set RMSERVE_API_KEYS with apiKeys.existingSecret (or apiKeys.keys), not extraEnv" }}
{{- end }}
{{- if eq (toString .name) "RMSERVE_API_KEYS_FILE" }}{{ $fileKeys = true }}{{ end }}
{{- end }}
{{- if and .Values.config.RMSERVE_PROTECT_METRICS (not (or $apiKeys.keys $apiKeys.existingSecret $fileKeys)) }}
{{- fail "config.RMSERVE_PROTECT_METRICS needs API keys: set apiKeys.existingSecret (or apiKeys.keys)" }}
{{- end }}
{{- end }}

{{- define "rmserve.apiKeysSecretKey" -}}
{{- ternary .Values.apiKeys.existingSecretKey "api-keys" (ne .Values.apiKeys.existingSecret "") }}
{{- end }}

{{/* The server exits at most graceSeconds after SIGTERM, which comes after the preStop sleep. */}}
{{- define "rmserve.terminationGracePeriodSeconds" -}}
{{- with .Values.shutdown }}
{{- add .preStopSleepSeconds .graceSeconds .marginSeconds }}
{{- end }}
{{- end }}

{{/* Torch / ONNX Runtime threads: the CPU limit (else request), rounded down, at least 1; empty
without either. The server's own default is every core of the node, whatever the pod may use. */}}
{{- define "rmserve.threads" -}}
{{- $resources := .Values.resources | default dict }}
{{- $cpu := dig "limits" "cpu" "" $resources | default (dig "requests" "cpu" "" $resources) | toString }}
{{- if hasSuffix "m" $cpu }}
{{- max 1 (div (atoi (trimSuffix "m" $cpu)) 1000) }}
{{- else if $cpu }}
{{- max 1 (floor (float64 $cpu) | int) }}
{{- end }}
{{- end }}

{{/* A value as an environment variable: lists and maps as JSON (what pydantic-settings parses),
whole numbers without an exponent (values arrive as float64: 8388608 would print 8.388608e+06). */}}
{{- define "rmserve.envValue" -}}
{{- if or (kindIs "slice" .) (kindIs "map" .) }}
{{- toJson . }}
{{- else if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}
