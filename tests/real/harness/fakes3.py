"""An S3 and ECS-credentials stand-in for tests: serves local files as the objects of one bucket to requests
whose SigV4 signature it checks with AWS's own signer (botocore), and hands out the keys it checks them with
the way the ECS agent hands a task its role's credentials.

- `GET|HEAD /<bucket>/<key>` (path-style, the key percent-encoded as S3 reads it): the object, or S3's XML
  error: `NoSuchBucket`/`NoSuchKey` (404), `AccessDenied` (403: unsigned, an x-amz-* header left unsigned,
  or a key made unreadable with `deny`), `InvalidAccessKeyId`/`InvalidToken`/`SignatureDoesNotMatch`/
  `RequestTimeTooSkewed` (403), `ExpiredToken`/`AuthorizationHeaderMalformed` (400), `SlowDown` (503, the
  failures queued with `fail`).
- `GET /v2/credentials/<id>` on a listener of its own (the ECS agent's, 169.254.170.2:80 in a test host):
  a new key pair each time, `{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}`, valid for
  `credential_lifetime_s` (or the next of `lifetimes`). With `credentials_token` set it also requires that
  `Authorization` header, as AWS_CONTAINER_AUTHORIZATION_TOKEN gives it.

The signature is recomputed from the received method, raw path and the headers the request says it signed
(botocore's S3SigV4Auth, with the request's own x-amz-date), so the client's signer is checked by an
implementation that is not its own. Counters record every request, the bytes sent and the signature failures.

It listens on loopback by default, or at an address inside a test host's network namespace (`netns`, through
fakehub's in_netns), so a container on that host reaches it; the caller adds the addresses.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .fakehub import NoLookupHTTPServer, serve, stop_serving

CHUNK = 1 << 20
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_SKEW_S = 15 * 60  # S3's RequestTimeTooSkewed limit
SETTLE_S = 5.0  # how long reading the counters waits for requests still being answered
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/\s]+)/(?P<day>\d{8})/(?P<region>[^/\s]+)/(?P<service>[^/\s]+)"
    r"/aws4_request,\s*SignedHeaders=(?P<names>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})")


@dataclass(frozen=True)
class IssuedKey:
    access_key: str
    secret_key: str
    token: str | None
    expires: float  # epoch seconds


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str  # as received (encoded)
    key: str  # decoded, without the bucket
    status: int
    code: str  # S3's error code, "" when served
    bytes_sent: int
    access_key: str | None


@dataclass
class Counters:
    requests: list[S3Request] = field(default_factory=list)
    credential_requests: int = 0

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.requests)

    @property
    def signature_failures(self) -> int:
        return sum(r.code == "SignatureDoesNotMatch" for r in self.requests)

    def requests_for(self, key: str) -> list[S3Request]:
        return [r for r in self.requests if r.key == key]


class S3Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class FakeS3:
    def __init__(self, address: str = "127.0.0.1", netns: str | None = None, *, port: int = 0,
                 credentials_address: str | None = None, credentials_port: int = 0, bucket: str = "models",
                 region: str = "us-east-1", credentials_token: str | None = None,
                 credential_lifetime_s: float = 6 * 3600) -> None:
        self.address, self.netns, self.port = address, netns, port
        self.credentials_address = credentials_address or address
        self.credentials_port = credentials_port
        self.bucket, self.region = bucket, region
        self.credentials_token = credentials_token
        self.credential_lifetime_s = credential_lifetime_s
        # Lifetimes of the next credentials handed out, first first; then credential_lifetime_s.
        self.lifetimes: list[float] = []
        self.objects: dict[str, Path] = {}
        self.corrupt: dict[str, bytes] = {}  # key -> bytes served instead of the file's
        self.denied: set[str] = set()
        self.failures: dict[str, int] = {}  # key -> how many more requests answer 503 SlowDown
        self.rate_bytes_per_s: float | None = None
        self._counters = Counters()
        # Requests being answered: one is recorded once its answer is sent, which its client may see (and exit
        # on) first; reading the counters waits for them.
        self._in_flight = 0
        self._settled = threading.Condition()
        self.credentials_id = secrets.token_hex(8)
        self._keys: dict[str, IssuedKey] = {}
        self._lock = threading.Lock()
        self._servers: list[NoLookupHTTPServer] = []

    # --- content and keys ---------------------------------------------------------------------
    def add_folder(self, prefix: str, folder: Path) -> dict[str, Path]:
        """Serves every file below `folder` as `<prefix>/<relative path>`; returns key -> file."""
        added = {f"{prefix}/{p.relative_to(folder).as_posix()}": p for p in sorted(folder.rglob("*")) if p.is_file()}
        self.objects.update(added)
        return added

    def fail(self, key: str, times: int = 1) -> None:
        self.failures[key] = self.failures.get(key, 0) + times

    def deny(self, key: str) -> None:
        self.denied.add(key)

    def add_static_key(self, token: str | None = None) -> IssuedKey:
        """A key pair that does not expire (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, as a user has)."""
        return self._issue(float("inf"), token)

    def issue_credentials(self) -> IssuedKey:
        with self._lock:
            lifetime = self.lifetimes.pop(0) if self.lifetimes else self.credential_lifetime_s
        return self._issue(time.time() + lifetime, secrets.token_urlsafe(48))

    def issued_keys(self) -> list[IssuedKey]:
        with self._lock:
            return list(self._keys.values())

    def _issue(self, expires: float, token: str | None) -> IssuedKey:
        key = IssuedKey("ASIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30), token, expires)
        with self._lock:
            self._keys[key.access_key] = key
        return key

    # --- lifecycle ----------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """AWS_ENDPOINT_URL_S3 for a client of this stand-in."""
        return f"http://{self.address}:{self._servers[0].server_port}"

    @property
    def credentials_relative_uri(self) -> str:
        """AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (with the listener at 169.254.170.2:80)."""
        return f"/v2/credentials/{self.credentials_id}"

    @property
    def credentials_full_uri(self) -> str:
        """AWS_CONTAINER_CREDENTIALS_FULL_URI."""
        return f"http://{self.credentials_address}:{self._servers[1].server_port}{self.credentials_relative_uri}"

    def start(self) -> FakeS3:
        self._servers = serve(self.netns, [(self.address, self.port, _s3_handler(self)),
                                           (self.credentials_address, self.credentials_port, _ecs_handler(self))],
                              "fakes3")
        return self

    def stop(self) -> None:
        stop_serving(self._servers)
        self._servers = []

    def __enter__(self) -> FakeS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def counters(self) -> Counters:
        """What was counted, once the requests being answered are recorded (at most SETTLE_S)."""
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0, timeout=SETTLE_S)
        return self._counters

    def reset_counters(self) -> Counters:
        """Start counting afresh; returns what was counted so far."""
        old = self.counters
        with self._lock:
            self._counters = Counters()
        return old

    def begin_request(self) -> None:
        with self._settled:
            self._in_flight += 1

    def record(self, request: S3Request) -> None:
        with self._lock:
            self._counters.requests.append(request)
        with self._settled:
            self._in_flight -= 1
            self._settled.notify_all()

    def count_credential_request(self) -> None:
        with self._lock:
            self._counters.credential_requests += 1

    def take_failure(self, key: str) -> bool:
        with self._lock:
            left = self.failures.get(key, 0)
            if left:
                self.failures[key] = left - 1
            return left > 0

    # --- the signature ------------------------------------------------------------------------
    def authenticate(self, method: str, raw_path: str, headers: dict[str, str]) -> IssuedKey:
        """The key that signed this request (`headers`: lower-case names); S3Refusal as S3 would refuse it."""
        found = AUTHORIZATION.fullmatch(headers.get("authorization", "").strip())
        if found is None:
            raise S3Refusal(403, "AccessDenied", "Access Denied (no AWS4-HMAC-SHA256 Authorization header)")
        with self._lock:
            key = self._keys.get(found["key"])
        if key is None:
            raise S3Refusal(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our "
                            "records.")
        if found["region"] != self.region or found["service"] != "s3":
            raise S3Refusal(400, "AuthorizationHeaderMalformed", f"the region '{found['region']}' is wrong; "
                            f"expecting '{self.region}'", {"x-amz-bucket-region": self.region})
        names = found["names"].split(";")
        _check_signed_headers(names, headers)
        if headers.get("x-amz-security-token") != key.token:
            raise S3Refusal(403, "InvalidToken", "The provided token is malformed or otherwise invalid.")
        amz_date = headers["x-amz-date"]
        _check_date(amz_date, found["day"])
        if time.time() > key.expires:
            raise S3Refusal(400, "ExpiredToken", "The provided token has expired.")
        if not hmac.compare_digest(botocore_signature(method, raw_path, headers, names, key, self.region),
                                   found["signature"]):
            raise S3Refusal(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                            "signature you provided. Check your key and signing method.")
        return key


def _check_signed_headers(names: list[str], headers: dict[str, str]) -> None:
    required = {"host", "x-amz-date", "x-amz-content-sha256"}
    unsigned = sorted(n for n in headers if (n.startswith("x-amz-") or n in required) and n not in names)
    if unsigned:
        raise S3Refusal(403, "AccessDenied", f"There were headers present in the request which were not signed: "
                        f"{', '.join(unsigned)}")
    if not required <= set(names) or any(n not in headers for n in names):
        raise S3Refusal(403, "AccessDenied", f"SignedHeaders must name host, x-amz-date and x-amz-content-sha256, "
                        f"all present: {';'.join(names)}")
    if headers["x-amz-content-sha256"] not in (EMPTY_SHA256, UNSIGNED_PAYLOAD):
        raise S3Refusal(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not "
                        "match what was computed.")


def _check_date(amz_date: str, scope_day: str) -> None:
    try:
        signed_at = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise S3Refusal(403, "AccessDenied", f"x-amz-date {amz_date!r} is not YYYYMMDDTHHMMSSZ") from None
    if amz_date[:8] != scope_day:
        raise S3Refusal(400, "AuthorizationHeaderMalformed", "the credential scope's date is not x-amz-date's")
    if abs(time.time() - signed_at) > MAX_SKEW_S:
        raise S3Refusal(403, "RequestTimeTooSkewed", "The difference between the request time and the current "
                        "time is too large.")


def botocore_signature(method: str, raw_path: str, headers: dict[str, str], names: list[str], key: IssuedKey,
                       region: str) -> str:
    """The signature botocore computes for the request as received: its method, its path as sent (S3 does not
    normalise it) and the headers it names as signed, at its own x-amz-date."""
    request = AWSRequest(method=method, url=f"http://{headers['host']}{raw_path}",
                         headers={name: headers[name] for name in names})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials(key.access_key, key.secret_key, key.token), "s3", region)
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))


def _error_xml(code: str, message: str, resource: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message><Resource>{escape(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AmazonS3"

    def log_message(self, format: str, *args: object) -> None:
        pass  # the counters record every request

    def _reply(self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None,
               head: bool = False) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head and payload:
            self.wfile.write(payload)


def _s3_handler(s3: FakeS3) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        def do_GET(self) -> None:
            self._serve(head=False)

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def _serve(self, head: bool) -> None:
            s3.begin_request()
            raw_path = urllib.parse.urlsplit(self.path).path
            bucket, _, encoded_key = raw_path.lstrip("/").partition("/")
            key = urllib.parse.unquote(encoded_key)
            request_id = secrets.token_hex(8).upper()
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, code, sent, access_key = 200, "", 0, None
            try:
                signer = s3.authenticate(self.command, raw_path, headers)
                access_key = signer.access_key
                sent = self._object(bucket, key, head, request_id)
            except S3Refusal as refusal:
                status, code = refusal.status, refusal.code
                self._reply(status, _error_xml(code, refusal.message, raw_path, request_id),
                            {"Content-Type": "application/xml", "x-amz-request-id": request_id, **refusal.headers},
                            head=head)
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                s3.record(S3Request(self.command, raw_path, key, status, code, sent, access_key))

        def _object(self, bucket: str, key: str, head: bool, request_id: str) -> int:
            if bucket != s3.bucket:
                raise S3Refusal(404, "NoSuchBucket", "The specified bucket does not exist")
            if key in s3.denied:
                raise S3Refusal(403, "AccessDenied", "Access Denied")
            if s3.take_failure(key):
                raise S3Refusal(503, "SlowDown", "Please reduce your request rate.")
            source = s3.objects.get(key)
            if source is None:
                raise S3Refusal(404, "NoSuchKey", "The specified key does not exist.")
            data = s3.corrupt[key] if key in s3.corrupt else source.read_bytes()
            self.send_response(200)
            for name, value in (("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data))),
                                ("ETag", f'"{hashlib.md5(data).hexdigest()}"'), ("x-amz-request-id", request_id)):
                self.send_header(name, value)
            self.end_headers()
            if head:
                return 0
            step = CHUNK if s3.rate_bytes_per_s is None else max(1024, int(s3.rate_bytes_per_s / 20))
            for start in range(0, len(data), step):
                chunk = data[start:start + step]
                self.wfile.write(chunk)
                if s3.rate_bytes_per_s is not None:
                    time.sleep(len(chunk) / s3.rate_bytes_per_s)
            return len(data)

    return Handler


def _ecs_handler(s3: FakeS3) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        def do_GET(self) -> None:
            s3.count_credential_request()
            if urllib.parse.urlsplit(self.path).path != s3.credentials_relative_uri:
                self._reply(404, b'{"code":"NotFound","message":"no credentials at this path"}')
                return
            if s3.credentials_token is not None and self.headers.get("Authorization") != s3.credentials_token:
                self._reply(401, b'{"code":"Unauthorized","message":"wrong or no authorization token"}')
                return
            key = s3.issue_credentials()
            expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires))
            self._reply(200, json.dumps({
                "RoleArn": "arn:aws:iam::123456789012:role/fakes3-task-role", "AccessKeyId": key.access_key,
                "SecretAccessKey": key.secret_key, "Token": key.token, "Expiration": expiration,
            }).encode(), {"Content-Type": "application/json"})

    return Handler
