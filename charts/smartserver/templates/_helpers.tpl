{{/*
Names and labels shared by every component. A component (operator, intake, dashboard)
lives in templates/<component>/ and calls
"smartserver.componentName", "smartserver.componentLabels" and
"smartserver.componentSelectorLabels" with (dict "root" $ "component" "<component>").
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "smartserver.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or just the release name when it already holds the chart name. */}}
{{- define "smartserver.fullname" -}}
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

{{/* Labels on every object. */}}
{{- define "smartserver.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "smartserver.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: smartserver
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels that select this release's objects. */}}
{{- define "smartserver.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smartserver.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* A component's object name: "<fullname>-<component>". */}}
{{- define "smartserver.componentName" -}}
{{- printf "%s-%s" (include "smartserver.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on a component's objects. */}}
{{- define "smartserver.componentLabels" -}}
{{ include "smartserver.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Labels that select a component's pods. */}}
{{- define "smartserver.componentSelectorLabels" -}}
{{ include "smartserver.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* A component's image reference; an empty tag means the chart's appVersion. */}}
{{- define "smartserver.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion | toString) -}}
{{- end -}}

{{/* The operator's ServiceAccount name. */}}
{{- define "smartserver.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "smartserver.componentName" (dict "root" . "component" "operator")) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A component's ServiceAccount name, for the components whose values hold a
serviceAccount {create, name} (intake, dashboard): called with
(dict "root" $ "component" "<component>").
*/}}
{{- define "smartserver.serviceAccountName" -}}
{{- $sa := (index .root.Values .component).serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "smartserver.componentName" .) $sa.name -}}
{{- else -}}
{{- required (printf "%s.serviceAccount.name is required when %s.serviceAccount.create is false" .component .component) $sa.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the intake reads its admin token from: existingSecret, or the chart's. */}}
{{- define "smartserver.intake.secretName" -}}
{{- default (include "smartserver.componentName" (dict "root" . "component" "intake")) .Values.intake.existingSecret -}}
{{- end -}}

{{/* The Secret the dashboard reads its session key and admin token from. */}}
{{- define "smartserver.dashboard.secretName" -}}
{{- default (include "smartserver.componentName" (dict "root" . "component" "dashboard")) .Values.dashboard.existingSecret -}}
{{- end -}}

{{/*
The Secret with the Stripe keys (stripe-api-key, stripe-webhook-secret), with
billing.enabled. Refuses values that cannot bill: no Secret, or no plan with a
stripe_price_id (the operator could subscribe nobody). Used by the operator's
StatefulSet, which is always rendered, and by the intake's Deployment.
*/}}
{{- define "smartserver.billing.secretName" -}}
{{- $billing := .Values.billing -}}
{{- if not $billing.existingSecret -}}
{{- fail (printf "billing.enabled needs billing.existingSecret, the name of a Secret holding the keys stripe-api-key (the Stripe secret key, sk_... or rk_...) and stripe-webhook-secret (the webhook endpoint's signing secret, whsec_...): create it with `kubectl -n %s create secret generic smartserver-stripe --from-literal=stripe-api-key=... --from-literal=stripe-webhook-secret=...` and set billing.existingSecret=smartserver-stripe (docs/operations.md, Billing)" .Release.Namespace) -}}
{{- end -}}
{{- $priced := list -}}
{{- range $name, $plan := .Values.plans -}}
{{- if $plan.stripe_price_id -}}
{{- $priced = append $priced $name -}}
{{- end -}}
{{- end -}}
{{- if not $priced -}}
{{- fail "billing.enabled but no plan has a stripe_price_id, so no Customer could be subscribed: set plans.<name>.stripe_price_id to the recurring Stripe price (price_...) of each plan you bill" -}}
{{- end -}}
{{- $billing.existingSecret -}}
{{- end -}}

{{/* The plan catalog's ConfigMap name. */}}
{{- define "smartserver.plansName" -}}
{{- printf "%s-plans" (include "smartserver.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
