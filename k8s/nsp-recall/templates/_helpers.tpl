{{/* Names, labels and the few derived values every template shares. */}}

{{- define "nsp-recall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nsp-recall.fullname" -}}
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

{{- define "nsp-recall.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "nsp-recall.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Serving pods; training pods carry component=training instead, so no selector picks them. */}}
{{- define "nsp-recall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nsp-recall.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "nsp-recall.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nsp-recall.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The serving image: the GPU build when gpu.enabled. */}}
{{- define "nsp-recall.image" -}}
{{- $image := ternary .Values.gpu.image .Values.image .Values.gpu.enabled }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}

{{- define "nsp-recall.trainerImage" -}}
{{- printf "%s:%s" .Values.training.image.repository (default .Chart.AppVersion .Values.training.image.tag) }}
{{- end }}

{{- define "nsp-recall.syncImage" -}}
{{- $image := .Values.bundles.objectStorage.image }}
{{- printf "%s:%s" $image.repository $image.tag }}
{{- end }}

{{- define "nsp-recall.bundleClaim" -}}
{{- default (printf "%s-bundles" (include "nsp-recall.fullname" .)) .Values.bundles.pvc.claimName }}
{{- end }}

{{- define "nsp-recall.trainingClaim" -}}
{{- default (printf "%s-training" (include "nsp-recall.fullname" .)) .Values.training.workspace.claimName }}
{{- end }}

{{/* "true" when a session store other than the in-memory one is configured. */}}
{{- define "nsp-recall.hasRedis" -}}
{{- if or .Values.redis.enabled .Values.externalRedis.host }}true{{ end }}
{{- end }}

{{/*
Environment that assembles NSP_REDIS_URL. The password comes from a Secret into REDIS_PASSWORD
and is interpolated with $(REDIS_PASSWORD): it never appears in the ConfigMap or the manifest.
*/}}
{{- define "nsp-recall.redisEnv" -}}
{{- if .Values.redis.enabled }}
{{- $host := printf "%s-redis-master" .Release.Name }}
{{- if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ printf "%s-redis" .Release.Name }}
      key: redis-password
- name: NSP_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/0" $host | quote }}
{{- else }}
- name: NSP_REDIS_URL
  value: {{ printf "redis://%s:6379/0" $host | quote }}
{{- end }}
{{- else if .Values.externalRedis.host }}
{{- $r := .Values.externalRedis }}
{{- $scheme := ternary "rediss" "redis" $r.tls }}
{{- $address := printf "%s:%v/%v" $r.host $r.port $r.db }}
{{- if $r.existingSecret }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretPasswordKey }}
- name: NSP_REDIS_URL
  value: {{ printf "%s://%s:$(REDIS_PASSWORD)@%s" $scheme $r.username $address | quote }}
{{- else }}
- name: NSP_REDIS_URL
  value: {{ printf "%s://%s" $scheme $address | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Container security context shared by every container of the chart. */}}
{{- define "nsp-recall.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "nsp-recall.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
fsGroup: {{ .Values.runAsUser }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Chart-level checks that the schema cannot express. */}}
{{- define "nsp-recall.validate" -}}
{{- $replicas := ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- if and (not (include "nsp-recall.hasRedis" .)) (or (gt (int $replicas) 1) .Values.autoscaling.enabled (gt (int .Values.settings.workers) 1)) }}
{{- fail "more than one replica, autoscaling or settings.workers > 1 needs a shared session store: set redis.enabled or externalRedis.host" }}
{{- end }}
{{- if and .Values.redis.enabled .Values.externalRedis.host }}
{{- fail "set either redis.enabled or externalRedis.host, not both" }}
{{- end }}
{{- if and (eq .Values.bundles.source "objectStorage") (not .Values.bundles.objectStorage.remote) }}
{{- fail "bundles.source=objectStorage needs bundles.objectStorage.remote" }}
{{- end }}
{{- if and .Values.settings.nearline.enabled (gt (int .Values.settings.nearline.k) (int .Values.settings.maxK)) }}
{{- fail "settings.nearline.k must not exceed settings.maxK" }}
{{- end }}
{{- if gt (int .Values.settings.defaultK) (int .Values.settings.maxK) }}
{{- fail "settings.defaultK must not exceed settings.maxK" }}
{{- end }}
{{- end }}

{{/* rclone settings of the object-storage containers (pull, sync, upload): dict root, bundleRoot. */}}
{{- define "nsp-recall.syncEnv" -}}
{{- $os := .root.Values.bundles.objectStorage -}}
- {name: REMOTE, value: {{ $os.remote | quote }}}
- {name: BUNDLE_ROOT, value: {{ .bundleRoot | quote }}}
- {name: KEEP, value: {{ $os.keep | quote }}}
- {name: INTERVAL, value: {{ $os.intervalSeconds | quote }}}
- {name: HOME, value: /tmp}
{{- range $name, $value := $os.env }}
- {name: {{ $name }}, value: {{ $value | quote }}}
{{- end }}
{{- end }}

{{- define "nsp-recall.syncEnvFrom" -}}
{{- with .Values.bundles.objectStorage.existingSecret -}}
envFrom:
  - secretRef:
      name: {{ . }}
{{- end }}
{{- end }}

{{/* Secret-backed environment of the server container: the admin token and the Redis URL. */}}
{{- define "nsp-recall.serverEnv" -}}
{{- with .Values.adminToken.existingSecret }}
- name: NSP_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.adminToken.key }}
{{- end }}
{{- include "nsp-recall.redisEnv" . }}
{{- end }}
