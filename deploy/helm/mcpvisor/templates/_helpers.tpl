{{/* Names. */}}
{{- define "mcpvisor.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mcpvisor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; the selector labels pick the gateway pods (component gateway). */}}
{{- define "mcpvisor.labels" -}}
app.kubernetes.io/name: {{ include "mcpvisor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "mcpvisor.versionLabels" . }}
{{- end -}}

{{- define "mcpvisor.versionLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mcpvisor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpvisor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "mcpvisor.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mcpvisor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "mcpvisor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* MCPVISOR_CLUSTER_REDIS: the bundled Redis, or redis.url. */}}
{{- define "mcpvisor.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "mcpvisor.fullname" .) -}}
{{- else -}}
{{- required "redis.url is required when redis.enabled is false (an external Redis, redis://host:6379/0)" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "mcpvisor.clusterSecretName" -}}
{{- default (printf "%s-cluster" (include "mcpvisor.fullname" .)) .Values.cluster.secret.existingSecret -}}
{{- end -}}

{{- define "mcpvisor.storeClaimName" -}}
{{- default (printf "%s-store" (include "mcpvisor.fullname" .)) .Values.store.existingClaim -}}
{{- end -}}

{{- define "mcpvisor.tenantsSecretName" -}}
{{- default (printf "%s-tenants" (include "mcpvisor.fullname" .)) .Values.tenants.existingSecret -}}
{{- end -}}

{{- define "mcpvisor.serversConfigMapName" -}}
{{- default (printf "%s-servers" (include "mcpvisor.fullname" .)) .Values.servers.existingConfigMap -}}
{{- end -}}

{{- define "mcpvisor.metricsSecretName" -}}
{{- default (printf "%s-metrics" (include "mcpvisor.fullname" .)) .Values.serviceMonitor.token.existingSecret -}}
{{- end -}}

{{/*
The API key Prometheus scrapes /metrics with, when the chart makes it: the one already in the cluster
(kept across upgrades), else a new random one. Memoized in .Values so the metrics Secret and the
tenants Secret (which holds its hash) see the same key within one render.
*/}}
{{- define "mcpvisor.metricsToken" -}}
{{- if not (hasKey .Values.serviceMonitor.token "_generated") -}}
{{- $token := printf "mcpv_%s" (randAlphaNum 43) -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "mcpvisor.metricsSecretName" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data .Values.serviceMonitor.token.key) -}}
{{- $token = index $existing.data .Values.serviceMonitor.token.key | b64dec -}}
{{- end -}}
{{- $_ := set .Values.serviceMonitor.token "_generated" $token -}}
{{- end -}}
{{- .Values.serviceMonitor.token._generated -}}
{{- end -}}

{{/* Seconds the kubelet waits after asking a pod to stop: preStop + drain + margin, unless set. */}}
{{- define "mcpvisor.terminationGracePeriodSeconds" -}}
{{- if .Values.cluster.terminationGracePeriodSeconds -}}
{{- .Values.cluster.terminationGracePeriodSeconds -}}
{{- else -}}
{{- add (int .Values.cluster.preStopSleepSeconds) (div (int .Values.cluster.drainTimeoutMs) 1000) 20 -}}
{{- end -}}
{{- end -}}
