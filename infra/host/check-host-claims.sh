#!/usr/bin/env bash
# Stops a deploy when something else on the host holds what the endpoint needs: its apiPort, its GPUs,
# its container names. Two stacks are two `pulumi up`s that know nothing of each other (components/_claims.py
# sees one program only), so the host is the one place that can tell. Runs before any container of the
# endpoint is created and changes nothing. Rendered by infra/render/host_scripts.py.
#
# A container is this stack's own when its labels name this project and stack (the endpoints of one
# stack are checked against each other by the program itself), or, without labels, when it has one of
# this endpoint's container names (a release before the labels): a stack re-deploying passes.
#
# Parameters (environment):
#   HOST_ADDRESS     the host as the stack names it, for the messages
#   API_PORT         the host port the proxy publishes (apiPort)
#   GPU_DEVICES      the GPUs the vLLM container asks for: empty (none), "all", or ids separated by commas
#   OWN_CONTAINERS   this endpoint's container names, one a line
#   CLAIM_PROJECT, CLAIM_STACK, CLAIM_ENDPOINT   who deploys
#   PROJECT_LABEL, STACK_LABEL, ENDPOINT_LABEL   the container labels that carry them
set -euo pipefail
: "${HOST_ADDRESS:?is not set}" "${API_PORT:?is not set}" "${OWN_CONTAINERS:?is not set}"
: "${CLAIM_PROJECT:?is not set}" "${CLAIM_STACK:?is not set}" "${CLAIM_ENDPOINT:?is not set}"
: "${PROJECT_LABEL:?is not set}" "${STACK_LABEL:?is not set}" "${ENDPOINT_LABEL:?is not set}"
: "${GPU_DEVICES?is not set}"

mapfile -t own_names <<<"$OWN_CONTAINERS"
# Fields are separated by the ASCII unit separator: `read` would merge runs of a whitespace separator
# (a tab), and empty fields are common.
t=$'\x1f'
# One line per container: name, state, project, stack, endpoint, published host ports (both what runs
# and what is configured, space-separated), GPU device requests (each "all" or an id list, space-
# separated), runtime, NVIDIA_VISIBLE_DEVICES (how the NVIDIA runtime selects devices: gpus as a list).
# A device request without ids (`--gpus all`, or a count) may take any GPU: it counts as "all".
template="{{.Name}}$t{{.State.Status}}$t{{index .Config.Labels \"$PROJECT_LABEL\"}}"
template+="$t{{index .Config.Labels \"$STACK_LABEL\"}}$t{{index .Config.Labels \"$ENDPOINT_LABEL\"}}$t"
# shellcheck disable=SC2016 # Go template variables, not the shell's
template+='{{range $p, $b := .NetworkSettings.Ports}}{{range $b}}{{.HostPort}} {{end}}{{end}}'
# shellcheck disable=SC2016
template+='{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostPort}} {{end}}{{end}}'
template+="$t"'{{range .HostConfig.DeviceRequests}}{{if .DeviceIDs}}{{join .DeviceIDs ","}}{{else}}all{{end}} {{end}}'
template+="$t{{.HostConfig.Runtime}}$t"
# shellcheck disable=SC2016
template+='{{range .Config.Env}}{{$kv := split . "="}}{{if eq (index $kv 0) "NVIDIA_VISIBLE_DEVICES"}}{{index $kv 1}}{{end}}{{end}}'

inspect_all() {
  local ids
  ids=$(docker ps --all --quiet --no-trunc) || return
  [[ -z $ids ]] && return 0
  # shellcheck disable=SC2086 # one id a word
  docker inspect --format "$template" $ids
}
# A container removed between the listing and the inspection fails the inspection: list again once.
if ! containers=$(inspect_all 2>/dev/null); then
  containers=$(inspect_all)
fi

# Who holds something, as the messages say it.
describe() {  # name project stack endpoint
  local name=$1 project=$2 stack=$3 endpoint=$4
  if [[ -z $stack ]]; then
    echo "container $name (not deployed by a stack of this program)"
  elif [[ $project != "$CLAIM_PROJECT" ]]; then
    echo "container $name (project $project, stack $stack, endpoint ${endpoint:-?})"
  else
    echo "container $name (stack $stack, endpoint ${endpoint:-?})"
  fi
}

is_own_name() {
  local own
  for own in "${own_names[@]}"; do [[ $1 == "$own" ]] && return 0; done
  return 1
}

# GPU ids two selections share, or "all" when either takes every GPU; nothing when they share none.
# Ids compare as text: an index and a UUID naming the same GPU are not matched.
shared_gpus() {  # ours theirs
  local ours=$1 theirs=$2 id other shared=() wanted taken
  [[ -z $ours || -z $theirs ]] && return 0
  if [[ $ours == all ]]; then echo "$theirs"; return 0; fi
  if [[ $theirs == all ]]; then echo "all"; return 0; fi
  IFS=, read -ra wanted <<<"$ours"
  IFS=, read -ra taken <<<"$theirs"
  for id in "${wanted[@]}"; do
    for other in "${taken[@]}"; do [[ $id == "$other" ]] && shared+=("$id"); done
  done
  (IFS=,; echo "${shared[*]}")
}

problems=()
port_published=false
while IFS=$t read -r name state project stack endpoint ports requests runtime visible; do
  [[ -z $name ]] && continue
  name=${name#/}
  own=false
  if [[ -n $stack ]]; then
    if [[ $project == "$CLAIM_PROJECT" && $stack == "$CLAIM_STACK" ]]; then own=true; fi
  elif is_own_name "$name"; then
    own=true
  fi
  # shellcheck disable=SC2086 # a space-separated list
  for port in $ports; do [[ $port == "$API_PORT" ]] && port_published=true; done
  if ! $own && is_own_name "$name"; then
    problems+=("name: a container named $name is already on $HOST_ADDRESS: $(describe "$name" "$project" "$stack" "$endpoint"); this stack's endpoint $CLAIM_ENDPOINT would replace it: destroy that stack or deploy this one to another host")
  fi
  # What a stopped container holds is free until it starts again.
  if $own || [[ $state != running && $state != restarting && $state != paused ]]; then
    continue
  fi
  for port in $ports; do
    if [[ $port == "$API_PORT" ]]; then
      problems+=("apiPort $API_PORT on $HOST_ADDRESS is held by $(describe "$name" "$project" "$stack" "$endpoint"); pick another apiPort or destroy that stack")
      break
    fi
  done
  held=""
  for request in $requests; do
    [[ $request == all ]] && held=all
    [[ $held != all ]] && held=${held:+$held,}$request
  done
  if [[ $runtime == nvidia && -n $visible && $visible != void && $visible != none ]]; then
    [[ $visible == all ]] && held=all
    [[ $held != all ]] && held=${held:+$held,}$visible
  fi
  common=$(shared_gpus "$GPU_DEVICES" "$held")
  if [[ -n $common ]]; then
    problems+=("gpus $GPU_DEVICES on $HOST_ADDRESS: GPU $common is held by $(describe "$name" "$project" "$stack" "$endpoint"); pick other gpus or destroy that stack")
  fi
done <<<"$containers"

# A port no container publishes may still be taken by a process on the host (or a container on the host
# network). `ss` lists listening sockets without privileges; a host without it skips this one check.
if ! $port_published && command -v ss >/dev/null 2>&1; then
  if ss -tln | awk -v p=":$API_PORT" 'NR > 1 && substr($4, length($4) - length(p) + 1) == p {found = 1} END {exit !found}'; then
    problems+=("apiPort $API_PORT on $HOST_ADDRESS is held by a process that is not a container (ss lists a listening socket on it); pick another apiPort or stop that process")
  fi
fi

if ((${#problems[@]})); then
  printf '%s\n' "${problems[@]}" >&2
  exit 1
fi
echo "host claims: apiPort $API_PORT${GPU_DEVICES:+ and gpus $GPU_DEVICES} free on $HOST_ADDRESS for stack $CLAIM_STACK, endpoint $CLAIM_ENDPOINT"
