"""The S3 artifact store: boto3 for the cloud, presigned GET URLs for devices.

Presigned URLs expire. Each URL is signed to live as long as the document that carries it
(the release), but never longer than S3's maximum of 7 days (`store.presign_max_s`): a release
that must stay installable longer than that needs a file store behind HTTP, or a fresh
deployment (which signs fresh URLs) within the week.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cloud.artifacts import StoreError
from cloud.config import StoreConfig

__all__ = ["S3Store"]

log = logging.getLogger(__name__)


class S3Store:
    def __init__(self, client: Any, bucket: str, prefix: str = "", presign_max_s: int = 604800):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.presign_max_s = presign_max_s

    @classmethod
    def from_config(cls, config: StoreConfig) -> S3Store:
        bucket, _, prefix = config.artifacts.removeprefix("s3://").partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            config=Config(signature_version="s3v4", retries={"max_attempts": 3}),
        )
        return cls(client, bucket, prefix, config.presign_max_s)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"s3://{self.bucket}/{self._key(key)}: {e}") from e

    def get(self, key: str, max_bytes: int) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            if int(obj.get("ContentLength", 0)) > max_bytes:
                raise StoreError(f"s3://{self.bucket}/{self._key(key)} exceeds {max_bytes} bytes")
            data: bytes = obj["Body"].read(max_bytes + 1)
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"s3://{self.bucket}/{self._key(key)}: {e}") from e
        if len(data) > max_bytes:
            raise StoreError(f"s3://{self.bucket}/{self._key(key)} exceeds {max_bytes} bytes")
        return data

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        except BotoCoreError as e:
            raise StoreError(f"s3://{self.bucket}: {e}") from e
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, sorted (the store's own prefix taken off)."""
        out: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                out.extend(o["Key"] for o in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise StoreError(f"s3://{self.bucket}/{self._key(prefix)}: {e}") from e
        strip = len(self.prefix) + 1 if self.prefix else 0
        return sorted(k[strip:] for k in out)

    def put_url(self, key: str, lifetime_s: int, now: float) -> str:
        """A presigned PUT URL for `key`: the device uploads with no credential of its own."""
        url: str = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=max(1, min(lifetime_s, self.presign_max_s)),
        )
        return url

    def url(self, key: str, lifetime_s: int) -> str:
        expires = max(1, min(lifetime_s, self.presign_max_s))
        if lifetime_s > self.presign_max_s:
            log.warning(
                "presigned URL for %s lives %s s, less than the %s s asked for",
                key,
                expires,
                lifetime_s,
            )
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._key(key)},
            ExpiresIn=expires,
        )
        return url
