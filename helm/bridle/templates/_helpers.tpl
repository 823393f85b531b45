{{/* The five services, in the order they are rendered. */}}
{{- define "bridle.services" -}}
orchestrator router tools approvals secrets
{{- end }}

{{- define "bridle.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end }}

{{/* Name of one service's objects. Context: dict root, name. */}}
{{- define "bridle.svcname" -}}
{{- printf "%s-%s" (include "bridle.fullname" .root) .name -}}
{{- end }}

{{- define "bridle.selectorLabels" -}}
app.kubernetes.io/name: bridle
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "bridle.labels" -}}
{{ include "bridle.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: bridle
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}

{{/* A service's image: by digest when one is given (image.digest), else by tag. */}}
{{- define "bridle.image" -}}
{{- $v := .root.Values -}}
{{- if .svc.image.digest -}}
{{- printf "%s%s@%s" $v.image.registry .svc.image.repository .svc.image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" $v.image.registry .svc.image.repository (.svc.image.tag | default $v.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}
{{- end }}

{{/* Name of a service's headless Service, which its peers resolve to every ready pod.
Context: dict root, name. */}}
{{- define "bridle.peersname" -}}
{{- printf "%s-peers" (include "bridle.svcname" .) -}}
{{- end }}

{{/* In-cluster peer URL of a service: every ready pod behind its headless Service, so calls
are spread over the replicas (a ClusterIP would pin each caller's one connection to one pod).
With tls.enabled it is https://: a service with TLS files dials even one address through
discovery (every address the name resolves to, re-resolved, redialled when its certificate is
renewed) and checks the bare service name in the callee's certificate; the scheme says TLS, so
a service that somehow lacked its TLS files would fail to call rather than call in plaintext.
Context: dict root, name. */}}
{{- define "bridle.url" -}}
{{- $svc := index .root.Values .name -}}
{{- $host := printf "%s.%s.svc:%d" (include "bridle.peersname" .) .root.Release.Namespace (int $svc.port) -}}
{{- if .root.Values.tls.enabled -}}
{{- printf "https://%s" $host -}}
{{- else -}}
{{- printf "dns:///%s" $host -}}
{{- end -}}
{{- end }}

{{/* The port of a service's plaintext health-only listener (tls.enabled). Context: dict root,
name, svc. */}}
{{- define "bridle.healthPort" -}}
{{- .svc.healthPort | default .root.Values.defaults.healthPort | int -}}
{{- end }}

{{/* Where each pod mounts its TLS files (tls.crt, tls.key, ca.crt). */}}
{{- define "bridle.tlsDir" -}}
/etc/bridle/tls
{{- end }}

{{/* The Secret holding a service's TLS files: tls.existingSecrets.<service> when given, else
the one its cert-manager Certificate fills. Fails when there is neither. Context: dict root,
name. */}}
{{- define "bridle.tlsSecret" -}}
{{- $t := .root.Values.tls -}}
{{- $existing := index ($t.existingSecrets | default dict) .name | default "" -}}
{{- if $existing -}}
{{- $existing -}}
{{- else if $t.certManager.issuerRef.name -}}
{{- printf "%s-tls" (include "bridle.svcname" .) -}}
{{- else -}}
{{- fail (printf "tls.enabled: the %s service has no certificate: set tls.certManager.issuerRef.name (a cert-manager CA issuer) or tls.existingSecrets.%s (a Secret you made with tls.crt, tls.key and ca.crt)" .name .name) -}}
{{- end -}}
{{- end }}

{{/* The DNS names a service's certificate carries, one per line: its bare name (the name
every client checks, whatever address it dialled), then its Service's and headless Service's
names, short to fully qualified. Context: dict root, name. */}}
{{- define "bridle.tlsNames" -}}
{{- $ns := .root.Release.Namespace -}}
{{- $domain := .root.Values.tls.clusterDomain | default "cluster.local" -}}
- {{ .name }}
{{- range $n := list (include "bridle.svcname" .) (include "bridle.peersname" .) }}
- {{ $n }}
- {{ $n }}.{{ $ns }}
- {{ $n }}.{{ $ns }}.svc
- {{ $n }}.{{ $ns }}.svc.{{ $domain }}
{{- end }}
{{- end }}

{{/* The internal token's Secret and key, as "name key", or nothing when the services present
none: auth.mode keys, and the Secret named in values, else (without TLS, where certificates
identify the services) the one the chart makes (templates/secrets.yaml). Context: root. */}}
{{- define "bridle.internalToken" -}}
{{- $a := .Values.auth -}}
{{- if eq $a.mode "keys" -}}
{{- if $a.internalTokenSecret.name -}}
{{- printf "%s %s" $a.internalTokenSecret.name $a.internalTokenSecret.key -}}
{{- else if not .Values.tls.enabled -}}
{{- printf "%s-internal-token token" (include "bridle.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The Secret holding the bootstrap admin key (key `key`), when the orchestrator registers
one. Context: root. */}}
{{- define "bridle.adminKeySecret" -}}
{{- $b := .Values.auth.bootstrapAdmin -}}
{{- if and (eq .Values.auth.mode "keys") $b.enabled .Values.orchestrator.enabled -}}
{{- $b.secretName | default (printf "%s-admin-key" (include "bridle.fullname" .)) -}}
{{- end -}}
{{- end }}

{{/* A NetworkPolicy peer selecting one Bridle service's pods. Context: dict root, name. */}}
{{- define "bridle.peer" -}}
- podSelector:
    matchLabels:
      {{- include "bridle.selectorLabels" . | nindent 6 }}
{{- end }}

{{/* Environment of a service's container. Context: dict root, name, svc. */}}
{{- define "bridle.env" -}}
{{- $v := .root.Values -}}
{{- $up := upper .name -}}
- name: BRIDLE_LOG
  value: {{ $v.log.level | quote }}
- name: BRIDLE_LOG_FORMAT
  value: json
- name: BRIDLE_{{ $up }}_LISTEN
  value: "0.0.0.0:{{ .svc.port }}"
- name: BRIDLE_{{ $up }}_GRACE_PERIOD
  value: "{{ sub (int (.svc.terminationGracePeriodSeconds | default $v.defaults.terminationGracePeriodSeconds)) 10 }}s"
- name: BRIDLE_KEY_PREFIX
  value: {{ $v.keyPrefix | quote }}
{{- if $v.redis.urlSecret.name }}
- name: BRIDLE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.redis.urlSecret.name }}
      key: {{ $v.redis.urlSecret.key }}
{{- else }}
- name: BRIDLE_REDIS_URL
  value: {{ $v.redis.url | quote }}
{{- end }}
{{- if $v.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.otel.endpoint | quote }}
{{- end }}
{{- if $v.metrics.enabled }}
{{- /* Prometheus' text format at GET /metrics, plain HTTP (templates/monitoring.yaml). */}}
- name: BRIDLE_METRICS_LISTEN
  value: "0.0.0.0:{{ $v.metrics.port }}"
{{- end }}
{{- if $v.tls.enabled }}
{{- $dir := include "bridle.tlsDir" . }}
- name: BRIDLE_TLS_CERT
  value: {{ $dir }}/tls.crt
- name: BRIDLE_TLS_KEY
  value: {{ $dir }}/tls.key
- name: BRIDLE_TLS_CA
  value: {{ $dir }}/ca.crt
- name: BRIDLE_HEALTH_LISTEN
  value: "0.0.0.0:{{ include "bridle.healthPort" . }}"
{{- end }}
- name: BRIDLE_AUTH
  value: {{ $v.auth.mode | quote }}
{{- with include "bridle.internalToken" .root }}
{{- $ref := splitList " " . }}
- name: BRIDLE_INTERNAL_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ index $ref 0 }}
      key: {{ index $ref 1 }}
{{- end }}
{{- if eq .name "tools" }}
{{- /* The address other tools replicas forward a run's calls to (advertise_url's default). */}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}
{{- if eq .name "orchestrator" }}
- name: BRIDLE_ORCHESTRATOR_ROUTER_URL
  value: {{ include "bridle.url" (dict "root" .root "name" "router") | quote }}
- name: BRIDLE_ORCHESTRATOR_TOOLS_URL
  value: {{ include "bridle.url" (dict "root" .root "name" "tools") | quote }}
- name: BRIDLE_ORCHESTRATOR_APPROVALS_URL
  value: {{ include "bridle.url" (dict "root" .root "name" "approvals") | quote }}
- name: BRIDLE_ORCHESTRATOR_SECRETS_URL
  value: {{ include "bridle.url" (dict "root" .root "name" "secrets") | quote }}
{{- with include "bridle.adminKeySecret" .root }}
{{- /* Registered as an admin key of the tenant at start, unless it already is. */}}
- name: BRIDLE_ORCHESTRATOR_BOOTSTRAP_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: key
- name: BRIDLE_ORCHESTRATOR_BOOTSTRAP_ADMIN_TENANT
  value: {{ $v.auth.bootstrapAdmin.tenant | quote }}
{{- end }}
{{- end }}
{{- if and (eq .name "orchestrator") .svc.mcp.enabled }}
{{- /* The MCP endpoint's DNS-rebinding guard accepts the names the Service and the exposed
       routes are reached by, and whatever else the values list. */}}
{{- $svcName := include "bridle.svcname" . }}
{{- $ns := .root.Release.Namespace }}
{{- $domain := .root.Values.tls.clusterDomain | default "cluster.local" }}
{{- $hosts := list $svcName (printf "%s.%s" $svcName $ns) (printf "%s.%s.svc" $svcName $ns) (printf "%s.%s.svc.%s" $svcName $ns $domain) }}
{{- with .root.Values.ingress.mcp.host }}{{ $hosts = append $hosts . }}{{ end }}
{{- $hosts = concat $hosts .root.Values.gatewayApi.mcp.hostnames .svc.mcp.allowedHosts | uniq }}
- name: BRIDLE_ORCHESTRATOR_MCP__LISTEN
  value: "0.0.0.0:{{ .svc.mcp.port }}"
- name: BRIDLE_ORCHESTRATOR_MCP__ALLOWED_HOSTS
  value: {{ toJson $hosts | quote }}
- name: BRIDLE_ORCHESTRATOR_MCP__CALL_WAIT
  value: {{ .svc.mcp.callWait | default "60s" | quote }}
{{- end }}
{{- if and (eq .name "router") .svc.gateway.enabled }}
- name: BRIDLE_ROUTER_HTTP_LISTEN
  value: "0.0.0.0:{{ .svc.gateway.port }}"
{{- end }}
{{- if or (eq .name "router") (eq .name "tools") }}
- name: BRIDLE_{{ $up }}_SECRETS_URL
  value: {{ include "bridle.url" (dict "root" .root "name" "secrets") | quote }}
{{- end }}
{{- if eq .name "tools" }}
{{- $d := .svc.docker }}
- name: BRIDLE_TOOLS_DOCKER_HOST
  value: {{ include "bridle.dockerHost" . | quote }}
- name: BRIDLE_TOOLS_WORKSPACE_ROOT
  value: {{ $d.workspaceRoot | quote }}
{{- if eq $d.mode "rootless" }}
{{- /* The engine's namespace maps the sandbox user to the tools container's uid (the engine
       image's /etc/subuid), so workspaces are the service's own; they are plain folders. */}}
- name: BRIDLE_TOOLS_WORKSPACE_MODE
  value: folder
- name: BRIDLE_TOOLS_SANDBOX_HOST_UID
  value: "65532"
- name: BRIDLE_TOOLS_SANDBOX_LIMITS_UNENFORCED
  value: {{ printf "[%s]" (join "," $d.rootless.limitsUnenforced) | quote }}
{{- end }}
{{- end }}
{{- if eq .name "approvals" }}
{{- if .svc.inbox.enabled }}
- name: BRIDLE_APPROVALS_INBOX__LISTEN
  value: "0.0.0.0:{{ .svc.inbox.port }}"
{{- with .svc.inbox.publicUrl }}
- name: BRIDLE_APPROVALS_INBOX__PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .svc.webhook.urlSecret.name }}
- name: BRIDLE_APPROVALS_WEBHOOK__URL
  valueFrom:
    secretKeyRef:
      name: {{ .svc.webhook.urlSecret.name }}
      key: {{ .svc.webhook.urlSecret.key }}
{{- end }}
{{- end }}
{{- if eq .name "secrets" }}
{{- $a := $v.vault.auth }}
- name: BRIDLE_SECRETS_VAULT_ADDR
  value: {{ $v.vault.addr | quote }}
- name: BRIDLE_SECRETS_KV_MOUNT
  value: {{ $v.vault.kvMount | quote }}
- name: BRIDLE_SECRETS_PATH_PREFIX
  value: {{ $v.vault.pathPrefix | quote }}
- name: BRIDLE_SECRETS_UNBOUND
  value: {{ $v.vault.unbound | default "deny" | quote }}
- name: BRIDLE_SECRETS_VAULT_AUTH
  value: {{ $a.method | quote }}
{{- if eq $a.method "kubernetes" }}
- name: BRIDLE_SECRETS_VAULT_KUBERNETES_ROLE
  value: {{ $a.kubernetes.role | quote }}
- name: BRIDLE_SECRETS_VAULT_KUBERNETES_MOUNT
  value: {{ $a.kubernetes.mountPath | quote }}
- name: BRIDLE_SECRETS_VAULT_KUBERNETES_TOKEN_FILE
  value: /var/run/secrets/bridle/vault/token
{{- else }}
- name: BRIDLE_SECRETS_VAULT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ required "vault.auth.token.secretName is required when vault.auth.method is token" $a.token.secretName }}
      key: {{ $a.token.secretKey }}
{{- end }}
{{- end }}
{{- range $k, $val := .svc.options }}
- name: BRIDLE_{{ $up }}_{{ upper $k }}
  value: {{ $val | toString | quote }}
{{- end }}
{{- end }}

{{/* The Docker engine address the tools service uses. Context: dict root, name, svc. */}}
{{- define "bridle.dockerHost" -}}
{{- $d := .svc.docker -}}
{{- if eq $d.mode "rootless" -}}
unix:///var/run/engine/docker.sock
{{- else if eq $d.mode "dind" -}}
unix:///var/run/dind/docker.sock
{{- else if eq $d.mode "hostSocket" -}}
unix:///var/run/docker.sock
{{- else -}}
{{- required "tools.docker.host is required when tools.docker.mode is external" $d.host -}}
{{- end -}}
{{- end }}

{{/*
The rootless Docker engine of a tools pod (tools.docker.mode=rootless): dockerd in a user
namespace of its own, made by rootlesskit, as uid 1000; no privileged container, no added
capability but the two its id mapping needs. It listens on a unix socket in a volume shared with
the tools container only (no TCP port). Each line of its securityContext says why it is there.
*/}}
{{- define "bridle.engine" -}}
{{- $e := .svc.docker.rootless -}}
- name: engine
  image: "{{ .root.Values.image.registry }}{{ $e.image.repository }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}"
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  env:
    - name: BRIDLE_ENGINE_SOCKET
      value: unix:///var/lib/engine-socket/docker.sock
  securityContext:
    # The engine's own user; root only inside the user namespace it makes, where the
    # sandboxes' uids live (the image's /etc/subuid maps the sandbox user to 65532, the
    # tools container's uid, so both own the run workspaces).
    runAsUser: 1000
    runAsGroup: 1000
    runAsNonRoot: true
    # newuidmap and newgidmap raise CAP_SETUID / CAP_SETGID from their file capabilities to
    # write that namespace's id maps (no_new_privs would stop them).
    allowPrivilegeEscalation: true
    capabilities:
      drop: [ALL]
      # What those two raise, and nothing else: inside its namespace the engine holds the
      # capabilities it needs, over that namespace only.
      add: [SETUID, SETGID]
    # The runtime's default profile refuses the unshare, mount and pivot_root every sandbox
    # needs; this one (files/engine-seccomp.json) refuses what no engine needs.
    seccompProfile:
      {{- toYaml $e.seccompProfile | nindent 6 }}
    {{- with $e.appArmorProfile }}
    appArmorProfile:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    # The kernel refuses a new /proc (each sandbox's) while the container's /proc has paths
    # masked by mounts over them; unmasked, it shows only the pod's own user namespace.
    procMount: Unmasked
    privileged: false
    readOnlyRootFilesystem: true
  startupProbe:
    exec:
      command: [docker, --host, unix:///var/lib/engine-socket/docker.sock, version]
    periodSeconds: 2
    failureThreshold: 60
  resources:
    {{- toYaml $e.resources | nindent 4 }}
  volumeMounts:
    - name: engine-socket
      mountPath: /var/lib/engine-socket
    - name: engine-storage
      mountPath: /var/lib/engine
    - name: engine-run
      mountPath: /run/engine
    - name: engine-tmp
      mountPath: /tmp
    - name: workspaces
      mountPath: {{ .svc.docker.workspaceRoot }}
{{- end }}

{{/* Labels of the release's objects that belong to no one service (the ServiceMonitor and
the PrometheusRule). Context: root. */}}
{{- define "bridle.releaseLabels" -}}
app.kubernetes.io/name: bridle
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bridle
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The PromQL matcher of the release's scrape jobs: `job=~"..."` over the Service name of
every enabled service, which the ServiceMonitor makes its targets' job. Names are quoted for
the regular expression (a release name may hold dots), and backslashes doubled for PromQL's
double-quoted string. Context: root. */}}
{{- define "bridle.jobMatcher" -}}
{{- $jobs := list -}}
{{- range $name := splitList " " (include "bridle.services" .) -}}
{{- if (index $.Values $name).enabled -}}
{{- $jobs = append $jobs (include "bridle.svcname" (dict "root" $ "name" $name) | regexQuoteMeta) -}}
{{- end -}}
{{- end -}}
job=~"{{ join "|" $jobs | replace "\\" "\\\\" }}"
{{- end }}
