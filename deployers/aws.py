"""The one place boto3 clients are built, and the AWS facts every target shares.

Every AWS call in the project goes through ``client(service)``. boto3 itself honours
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` (so tests point everything at a moto
server by environment alone); nothing here hard-codes an endpoint. ``endpoint_is_local`` is the
one answer to "is this service reached on this machine?" (a moto server: the local stand-ins
then serve the data plane, and figures are ``measured-local``). ``absent`` is the one reading of
"that resource does not exist" across services, and ``connection_failed`` of "no connection to
the service" (refused, reset, DNS, a timeout to connect: botocore's ``ConnectionError`` family
and ``ConnectionClosedError``; a read timeout is not one).
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError
from botocore.exceptions import ConnectionError as BotoConnectionError

DEFAULT_REGION = "us-east-1"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def region() -> str:
    """The region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, else us-east-1."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


@lru_cache(maxsize=8)
def _session(region_name: str, profile: str | None) -> boto3.session.Session:
    return boto3.session.Session(region_name=region_name, profile_name=profile)


def session() -> boto3.session.Session:
    """The shared boto3 session (region and ``AWS_PROFILE`` from the environment)."""
    return _session(region(), os.environ.get("AWS_PROFILE"))


def client(service: str, **config: Any) -> Any:
    """A boto3 client for ``service`` from the shared session. ``config`` goes to botocore Config."""
    return session().client(service, config=Config(**config) if config else None)


def reset() -> None:
    """Forget cached sessions (tests that change AWS_* variables call this)."""
    _session.cache_clear()


def endpoint_url(service: str) -> str | None:
    """The endpoint boto3 uses for ``service`` from the environment (None: AWS's own)."""
    var = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return os.environ.get(var) or os.environ.get("AWS_ENDPOINT_URL") or None


def endpoint_is_local(service: str) -> bool:
    """True when ``service`` is reached on this machine (e.g. a moto server), not in AWS."""
    url = endpoint_url(service)
    return bool(url) and urlparse(url).hostname in LOCAL_HOSTS


def error_code(exc: BaseException) -> str:
    """The AWS error code of ``exc`` ('' when it is no ``ClientError``)."""
    return str(exc.response["Error"]["Code"]) if isinstance(exc, ClientError) else ""


_ABSENT = {"ResourceNotFoundException", "ResourceNotFound", "NoSuchEntity", "NoSuchKey",
           "NoSuchBucket", "404", "ObjectNotFoundException"}


def absent(exc: BaseException) -> bool:
    """Whether ``exc`` says the resource does not exist (the wording differs per service)."""
    code, msg = error_code(exc), str(exc).lower()
    return code in _ABSENT or (
        code in {"ValidationException", "ValidationError"}
        and ("could not find" in msg or "not exist" in msg or "not found" in msg))


def connection_failed(exc: BaseException) -> bool:
    """Whether a botocore error means there was no connection to the service: refused, reset,
    DNS, a timeout to connect (``EndpointConnectionError``, ``ConnectTimeoutError``,
    ``ConnectionClosedError``, ...). A read timeout is not: the service is there, only slow."""
    return isinstance(exc, BotoConnectionError | ConnectionClosedError)
