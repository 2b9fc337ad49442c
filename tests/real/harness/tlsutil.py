"""Certificates shaped like the ones the program makes with pulumi-tls, made with the `openssl` CLI.

components/vllm_endpoint.py `_create_tls` creates, per stack:
- a CA: ECDSA P-256 key, self-signed, `is_ca_certificate`, allowed uses cert_signing + crl_signing;
- a server certificate: ECDSA P-256 key, CN and SAN = the host's address (an IP SAN for an IP,
  a DNS SAN otherwise), signed by that CA, allowed uses digital_signature + key_encipherment +
  server_auth;
- the file the proxy serves: server certificate, then the CA certificate.

pulumi-tls cannot run without the Pulumi engine, and the project venv has no `cryptography`, so the
same certificates come from openssl here. The extensions below are what the terraform tls provider
(behind pulumi-tls) writes for those arguments: basicConstraints and keyUsage critical, key
identifiers, extendedKeyUsage only where a `*_auth` use is allowed.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from .common import run

CA_VALIDITY_DAYS = 3 * 365  # TLS_VALIDITY_HOURS * 3 in the component
SERVER_VALIDITY_DAYS = 365  # TLS_VALIDITY_HOURS

_CA_EXTENSIONS = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_SERVER_EXTENSIONS = """\
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


@dataclass(frozen=True)
class CertificateAuthority:
    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> str:
        return self.cert_file.read_text()


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path
    ca: CertificateAuthority

    @property
    def key_pem(self) -> str:
        return self.key_file.read_text()

    @property
    def chain_pem(self) -> str:
        """What the proxy serves: exactly the component's join of server and CA certificate."""
        return self.cert_file.read_text().rstrip("\n") + "\n" + self.ca.cert_pem


def _ec_key(path: Path) -> None:
    # SEC1 "EC PRIVATE KEY" PEM, the form of pulumi-tls `private_key_pem` for ECDSA keys.
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(path)])
    path.chmod(0o600)


def _subject(common_name: str, organization: str | None = None) -> str:
    parts = ([f"/O={organization}"] if organization else []) + [f"/CN={common_name}"]
    return "".join(parts)


def make_ca(directory: Path, name: str) -> CertificateAuthority:
    """A private CA as `_create_tls` makes it for a stack resource called `name`."""
    directory.mkdir(parents=True, exist_ok=True)
    key, cert, cnf = directory / "ca.key", directory / "ca.crt", directory / "ca.cnf"
    cnf.write_text(_CA_EXTENSIONS)
    _ec_key(key)
    run(["openssl", "req", "-x509", "-new", "-config", str(cnf), "-extensions", "ca", "-sha256",
         "-key", str(key), "-subj", _subject(f"{name} vLLM endpoint CA", "vllm-endpoint"),
         "-days", str(CA_VALIDITY_DAYS), "-set_serial", f"0x{os.urandom(16).hex()}", "-out", str(cert)])
    return CertificateAuthority(cert, key)


def make_server_certificate(ca: CertificateAuthority, directory: Path, address: str) -> ServerCertificate:
    """The endpoint's certificate for `address`, signed by `ca` (CSR first, as pulumi-tls does)."""
    directory.mkdir(parents=True, exist_ok=True)
    key, csr, cert, ext = (directory / n for n in ("server.key", "server.csr", "server.crt", "server.ext"))
    try:
        ipaddress.ip_address(address)
        san = f"IP:{address}"
    except ValueError:
        san = f"DNS:{address}"
    ext.write_text(_SERVER_EXTENSIONS.format(san=san))
    _ec_key(key)
    run(["openssl", "req", "-new", "-key", str(key), "-subj", _subject(address), "-out", str(csr)])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca.cert_file), "-CAkey", str(ca.key_file),
         "-set_serial", f"0x{os.urandom(16).hex()}", "-days", str(SERVER_VALIDITY_DAYS), "-sha256",
         "-extfile", str(ext), "-extensions", "server", "-out", str(cert)])
    return ServerCertificate(cert, key, ca)


def certificate_text(pem_file: Path) -> str:
    """`openssl x509 -text` of a certificate file (what a reviewer would read)."""
    return run(["openssl", "x509", "-noout", "-text", "-in", str(pem_file)]).stdout
