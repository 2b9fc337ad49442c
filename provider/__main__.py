"""Entry point the Pulumi CLI runs for the vllm-endpoint component package (PulumiPlugin.yaml)."""

import sys
from pathlib import Path

# The package lives one folder up (vllm_endpoint/, with infra/ and components/ linked in); importing it
# from the checkout means the plugin serves exactly the code next to it, with no install step.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vllm_endpoint.provider import serve

if __name__ == "__main__":
    serve()
