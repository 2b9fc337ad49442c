"""`python -m vllm_endpoint import-docker-run -- docker run ...` (the same as the `vllm-endpoint` command)."""

import sys

from vllm_endpoint.cli import main

sys.exit(main())
