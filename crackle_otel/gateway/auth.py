"""Who may send to the gateway: an optional bearer token and/or mutual TLS.

The same two schemes the OpenTelemetry Collector offers its receivers:

- bearer token (sender side: the collector's ``headers: {authorization: "Bearer ..."}``
  or its ``bearertokenauth`` extension): every export carries
  ``authorization: Bearer <token>`` (gRPC metadata or HTTP header), compared in
  constant time; anything else gets UNAUTHENTICATED / 401;
- mutual TLS: with ``client_ca_file`` both transports require a client
  certificate signed by that CA (the collector's ``tls: {cert_file, key_file, ca_file}``).

TLS files are loaded and checked once, before anything binds, so a certificate
problem is reported as one (``TLSConfigError`` naming the file and the problem)
rather than as grpc's "Failed to bind to address".
"""

from __future__ import annotations

import hmac
import ssl
from dataclasses import dataclass

BEARER_PREFIX = "bearer "


class TLSConfigError(ValueError):
    """A TLS certificate, key or CA file cannot be used."""


@dataclass(frozen=True)
class TLSFiles:
    cert_file: str
    key_file: str
    client_ca_file: str | None = None  # set: clients must present a certificate signed by this CA

    def server_context(self) -> ssl.SSLContext:
        """An SSLContext for the HTTP server; raises TLSConfigError with a clear reason."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _read(self.cert_file, "certificate")
        _read(self.key_file, "private key")
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as error:
            reason = str(error.reason or error)
            if "KEY_VALUES_MISMATCH" in reason.upper():
                raise TLSConfigError(
                    f"TLS key {self.key_file} does not belong to certificate {self.cert_file}") from None
            raise TLSConfigError(
                f"TLS certificate {self.cert_file} / key {self.key_file} cannot be loaded ({reason}): "
                "expected a PEM certificate chain and its unencrypted PEM private key") from None
        if self.client_ca_file:
            _read(self.client_ca_file, "client CA")
            try:
                context.load_verify_locations(cafile=self.client_ca_file)
            except ssl.SSLError as error:
                raise TLSConfigError(
                    f"TLS client CA {self.client_ca_file} cannot be loaded ({error.reason or error}): "
                    "expected PEM certificates") from None
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self):  # -> grpc.ServerCredentials
        import grpc

        self.server_context()  # the same checks, with the same clear errors, before grpc sees the files
        key, cert = _read(self.key_file, "private key"), _read(self.cert_file, "certificate")
        if self.client_ca_file:
            return grpc.ssl_server_credentials([(key, cert)], root_certificates=_read(self.client_ca_file, "client CA"),
                                               require_client_auth=True)
        return grpc.ssl_server_credentials([(key, cert)])


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise TLSConfigError(f"TLS {what} file {path}: {error.strerror or error}") from None


class BearerToken:
    """Checks ``authorization`` values against one token; ``None`` token: everyone is allowed."""

    def __init__(self, token: str | None) -> None:
        if token is not None and (not token.strip() or token != token.strip()):
            raise ValueError("the bearer token must be non-empty and have no surrounding whitespace")
        self._expected = None if token is None else token.encode()

    @property
    def required(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | None) -> bool:
        if self._expected is None:
            return True
        if not authorization or not authorization[: len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
            return False
        return hmac.compare_digest(authorization[len(BEARER_PREFIX):].strip().encode(), self._expected)


def read_token_file(path: str) -> str:
    """The token in ``path`` (surrounding whitespace and a final newline removed)."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except OSError as error:
        raise ValueError(f"bearer token file {path}: {error.strerror or error}") from None
    if not token:
        raise ValueError(f"bearer token file {path} is empty")
    return token
