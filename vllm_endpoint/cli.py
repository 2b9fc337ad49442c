"""The `vllm-endpoint` command (a console script of the package; also `python -m vllm_endpoint`).

    vllm-endpoint import-docker-run [--target existing-host|aws] [--stack NAME] -- docker run ...

prints a ready `Pulumi.<stack>.yaml` for the `docker run` that served vLLM until now
(infra/settings/docker_run_import.py does the translation). The command may follow `--` as words, as one
quoted string, or come on standard input. A command it cannot read exits 2 with the reason.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vllm_endpoint.infra.settings.docker_run_import import (
    TARGETS,
    DockerRunError,
    import_docker_run,
    render_stack_file,
    split_command,
)

PROG = "vllm-endpoint"


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog=PROG, description="A private, OpenAI-compatible vLLM endpoint.")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    imports = commands.add_parser(
        "import-docker-run", help="print a Pulumi.<stack>.yaml that runs what a `docker run` of vLLM ran",
        description="Print a Pulumi.<stack>.yaml for a `docker run ... vllm/vllm-openai ...` command: every "
        "option becomes a setting or a comment saying why it is not carried over. Secrets are never written.",
    )
    imports.add_argument("--target", choices=TARGETS, default="existing-host",
                         help="where the endpoint will run (default: existing-host, the server the command ran on)")
    imports.add_argument("--stack", default="dev", help="the stack's name, for the file's title (default: dev)")
    imports.add_argument("--keep-insecure-image", action="store_true",
                         help="keep an image tag below the security floor (with allowInsecureImage: true) "
                         "instead of proposing the default release")
    imports.add_argument("docker_run", nargs=argparse.REMAINDER, metavar="-- docker run ...",
                         help="the command: words after --, one quoted string, or nothing to read standard input")
    return parser, imports


def main(argv: Sequence[str] | None = None) -> int:
    parser, imports = _parser()
    args = parser.parse_args(argv)
    words: list[str] = list(args.docker_run)
    if words[:1] == ["--"]:
        words = words[1:]
    try:
        if not words:
            words = split_command(sys.stdin.read())
        elif len(words) == 1:
            words = split_command(words[0])
        if not words:
            imports.error("no command: give `-- docker run ...` or pipe it on standard input")
        imported = import_docker_run(words, args.target, keep_insecure_image=args.keep_insecure_image)
    except DockerRunError as err:
        imports.error(str(err))
    sys.stdout.write(render_stack_file(imported, args.stack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
