{{/* The name of kepp's objects: the pool's name with "-epp", as the reference chart names its EPP. */}}
{{- define "kepp.name" -}}
{{ .Release.Name }}-epp
{{- end -}}

{{- define "kepp.labels" -}}
app.kubernetes.io/name: {{ include "kepp.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "kepp.selectorLabels" -}}
inferencepool: {{ include "kepp.name" . }}
{{- end -}}

{{- define "kepp.image" -}}
{{- if .Values.inferenceExtension.image.registry -}}
{{ .Values.inferenceExtension.image.registry }}/
{{- end -}}
{{ .Values.inferenceExtension.image.repository }}:{{ .Values.inferenceExtension.image.tag }}
{{- end -}}

{{/* True (non-empty) when the Deployment runs replicas that elect a leader. */}}
{{- define "kepp.leaderElection" -}}
{{- if and (eq .Values.mode "deployment") (gt (int .Values.inferenceExtension.replicas) 1) -}}
true
{{- end -}}
{{- end -}}

{{/* The flags both workloads pass; the kernel flags follow in each. */}}
{{- define "kepp.args" -}}
- {{ printf "--pool-name=%s" .Release.Name | quote }}
- {{ printf "--pool-namespace=%s" .Release.Namespace | quote }}
- "--pool-group=inference.networking.k8s.io"
- {{ printf "--grpc-port=%v" .Values.inferenceExtension.extProcPort | quote }}
- {{ printf "--grpc-health-port=%v" .Values.inferenceExtension.grpcHealthPort | quote }}
- {{ printf "--metrics-port=%v" .Values.inferenceExtension.metricsPort | quote }}
- {{ printf "--config-file=/config/%s" .Values.inferenceExtension.pluginsConfigFile | quote }}
{{- if include "kepp.leaderElection" . }}
- "--ha-enable-leader-election"
{{- end }}
{{- range $key, $value := .Values.inferenceExtension.flags }}
- {{ printf "--%s=%v" $key $value | quote }}
{{- end }}
{{- end -}}

{{/* The kepp container's ports, env and config mount, the same in both workloads. */}}
{{- define "kepp.containerCommon" -}}
ports:
- name: grpc
  containerPort: {{ .Values.inferenceExtension.extProcPort }}
- name: grpc-health
  containerPort: {{ .Values.inferenceExtension.grpcHealthPort }}
- name: metrics
  containerPort: {{ .Values.inferenceExtension.metricsPort }}
{{- if .Values.inferenceExtension.extraContainerPorts }}
{{ toYaml .Values.inferenceExtension.extraContainerPorts }}
{{- end }}
env:
- name: NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.inferenceExtension.env }}
{{ toYaml .Values.inferenceExtension.env }}
{{- end }}
{{- if .Values.inferenceExtension.resources }}
resources:
  {{- toYaml .Values.inferenceExtension.resources | nindent 2 }}
{{- end }}
{{- end -}}
