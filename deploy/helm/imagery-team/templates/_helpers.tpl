{{/* A team's names, as Kubernetes allows them (no '_'): <team>-inference, <team>-dispatcher, ... */}}
{{- define "imagery.team" -}}
{{- required "values.team: the team's name in deploy/teams.yaml" .Values.team | replace "_" "-" -}}
{{- end -}}
{{- define "imagery.inference" -}}{{ include "imagery.team" . }}-inference{{- end -}}
{{- define "imagery.dispatcher" -}}{{ include "imagery.team" . }}-dispatcher{{- end -}}
{{/* schemas/topics.py's names for the team (a unit test compares): its consumer group and job name, its topic */}}
{{- define "imagery.groupId" -}}{{ .Values.groupId | default (printf "http-dispatcher-%s" .Values.team) }}{{- end -}}
{{- define "imagery.inputTopic" -}}{{ .Values.inputTopic | default (printf "imagery.new.%s" .Values.team) }}{{- end -}}

{{- define "imagery.labels" -}}
app.kubernetes.io/part-of: imagery
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
imagery.io/team: {{ .Values.team | quote }}
{{- end -}}

{{- define "imagery.inferenceSelector" -}}
app.kubernetes.io/name: {{ include "imagery.inference" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The service's scheme and URL, as the dispatcher calls it */}}
{{- define "imagery.scheme" -}}{{ if .Values.service.tls.secret }}https{{ else }}http{{ end }}{{- end -}}
{{- define "imagery.serviceUrl" -}}
{{ include "imagery.scheme" . }}://{{ include "imagery.inference" . }}.{{ .Release.Namespace }}.svc:{{ .Values.httpPort }}
{{- end -}}

{{/* The state's folders: the job writes <uri>/<group id>/ (streaming/dispatch/checkpoints.py job_dir) */}}
{{- define "imagery.stateDir" -}}
{{ trimSuffix "/" .Values.dispatcher.state.uri }}/{{ include "imagery.groupId" . }}
{{- end -}}
