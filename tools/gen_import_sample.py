"""The README's import sample: `vllm-endpoint import-docker-run` run on the README's own original command
(the first bash block of "From `docker run` to this program"), with the stack file it prints."""

from __future__ import annotations

from pathlib import Path

from vllm_endpoint.infra.settings.docker_run_import import import_docker_run, render_stack_file, split_command

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## From `docker run` to this program"
STACK = "shared-gpu"


def original_command(readme: str) -> str:
    """The hand-written command the README's section starts with."""
    return readme.split(SECTION, 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]


def render() -> str:
    command = original_command((ROOT / "README.md").read_text(encoding="utf-8"))
    stack_file = render_stack_file(import_docker_run(split_command(command), "existing-host"), STACK)
    return "\n".join([
        "```bash",
        f"vllm-endpoint import-docker-run --stack {STACK} -- \\",
        "  " + command.replace("\n  ", "\n    "),
        "```",
        "",
        "```yaml",
        stack_file.rstrip("\n"),
        "```",
    ])
