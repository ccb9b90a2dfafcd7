"""The real S3 client programs, driven the same way, holding dummy keys.

Each driver runs one program against an endpoint (the proxy): boto3 in this
process, and awscli (v1, from PyPI), s3cmd and rclone as subprocesses, each
with its configuration in a temporary directory so the user's own files are
never read.  A driver that cannot do an operation says so with
`Unsupported`, which tests turn into an explicit skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

DUMMY_KEY = "AKIDUMMYCLIENTKEY000"
DUMMY_SECRET = "dummy-secret-the-proxy-throws-away"
CLIENT_REGION = "us-east-1"  # what the clients believe; the proxy re-signs
COMMAND_TIMEOUT = 120.0

# Multipart settings: parts of 8 MiB, so a 64 MiB upload has 8 of them.
PART_SIZE = 8 * 1024 * 1024


class Unsupported(Exception):
    """The client program has no way to do this operation."""


class ClientFailed(AssertionError):
    """A client program exited non-zero; the message holds its output."""


def bin_path(name: str) -> str:
    """A program installed beside this interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / name)


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment without AWS_/S3/rclone settings of the user's own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "RCLONE_", "S3CMD", "SIGNPROXY_", "SCP_"))
    }
    env.update(extra)
    return env


class Client:
    """What every driver can do; keys are object keys, paths local files."""

    name: ClassVar[str]

    def __init__(self, endpoint: str, workdir: Path) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def make_bucket(self, bucket: str) -> None:
        raise NotImplementedError

    def put(self, source: Path, bucket: str, key: str) -> None:
        raise NotImplementedError

    def put_tree(self, source: Path, bucket: str, prefix: str) -> None:
        """Upload every file under `source` as `prefix` + its relative path."""
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            self.put(path, bucket, prefix + path.relative_to(source).as_posix())

    def get(self, bucket: str, key: str, target: Path) -> None:
        raise NotImplementedError

    def get_range(self, bucket: str, key: str, first: int, last: int) -> bytes:
        raise NotImplementedError

    def list(self, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
        """(keys, common prefixes) under `prefix` with delimiter "/"."""
        raise NotImplementedError

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        raise NotImplementedError

    def delete(self, bucket: str, key: str) -> None:
        raise NotImplementedError

    def presign(self, bucket: str, key: str) -> str:
        raise NotImplementedError

    def upload_log(self, source: Path, bucket: str, key: str) -> str:
        """Upload with the program's own request tracing on; its output."""
        raise NotImplementedError

    # --- subprocess helper ---

    def run(self, args: list[str], *, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            args,
            capture_output=True,
            env=env,
            timeout=COMMAND_TIMEOUT,
            check=False,
            cwd=self.workdir,
        )
        output = result.stdout.decode(errors="replace")
        errors = result.stderr.decode(errors="replace")
        if result.returncode != 0:
            raise ClientFailed(
                f"{self.name} {args[1:]!r} exited {result.returncode}:\n"
                f"{output[-2000:]}\n{errors[-4000:]}"
            )
        return output + errors


# --- boto3 ------------------------------------------------------------------


class Boto3Client(Client):
    """boto3 as released, default checksum settings (CRC32 on uploads)."""

    name = "boto3"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(endpoint, workdir)
        self.s3 = self.make_s3()
        self.sent: list[tuple[str, str, dict[str, str]]] = []
        self.s3.meta.events.register("before-send.s3", self._record)

    def make_s3(self, **config: object) -> BaseClient:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=DUMMY_KEY,
            aws_secret_access_key=DUMMY_SECRET,
            region_name=CLIENT_REGION,
            config=Config(retries={"max_attempts": 1}, **config),
        )

    def _record(self, request: object, **_: object) -> None:
        headers = {k.lower(): str(v) for k, v in request.headers.items()}  # type: ignore[attr-defined]
        self.sent.append((request.method, request.url, headers))  # type: ignore[attr-defined]

    def make_bucket(self, bucket: str) -> None:
        self.s3.create_bucket(Bucket=bucket)

    def put(self, source: Path, bucket: str, key: str) -> None:
        from boto3.s3.transfer import TransferConfig

        transfer = TransferConfig(
            multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE
        )
        self.s3.upload_file(str(source), bucket, key, Config=transfer)

    def get(self, bucket: str, key: str, target: Path) -> None:
        try:
            self.s3.download_file(bucket, key, str(target))
        except ClientError as error:  # failures read alike for every client
            raise ClientFailed(f"boto3 download {key!r}: {error}") from error

    def get_range(self, bucket: str, key: str, first: int, last: int) -> bytes:
        answer = self.s3.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={first}-{last}"
        )
        return answer["Body"].read()

    def list(self, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
        answer = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
        return (
            [o["Key"] for o in answer.get("Contents", [])],
            [p["Prefix"] for p in answer.get("CommonPrefixes", [])],
        )

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        self.s3.copy_object(
            Bucket=bucket,
            Key=target_key,
            CopySource={"Bucket": bucket, "Key": source_key},
        )

    def delete(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=key)

    def presign(self, bucket: str, key: str) -> str:
        presigner = self.make_s3(signature_version="s3v4")
        return presigner.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
        )

    def upload_log(self, source: Path, bucket: str, key: str) -> str:
        self.sent.clear()
        self.put(source, bucket, key)
        return "\n".join(
            f"{method} {url} {json.dumps(headers)}"
            for method, url, headers in self.sent
        )


# --- awscli -----------------------------------------------------------------


class AwsCliClient(Client):
    """`aws s3` and `aws s3api` (awscli v1), dummy keys from the environment."""

    name = "awscli"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(endpoint, workdir)
        config = workdir / "aws-config"
        config.write_text(
            "[default]\n"
            f"region = {CLIENT_REGION}\n"
            "s3 =\n"
            "    addressing_style = path\n"
            f"    multipart_threshold = {PART_SIZE}\n"
            f"    multipart_chunksize = {PART_SIZE}\n"
        )
        credentials = workdir / "aws-credentials"
        credentials.write_text("")
        self.env = clean_environ(
            AWS_ACCESS_KEY_ID=DUMMY_KEY,
            AWS_SECRET_ACCESS_KEY=DUMMY_SECRET,
            AWS_CONFIG_FILE=str(config),
            AWS_SHARED_CREDENTIALS_FILE=str(credentials),
            AWS_MAX_ATTEMPTS="1",
        )

    def aws(self, *args: str) -> str:
        return self.run(
            [bin_path("aws"), *args, "--endpoint-url", self.endpoint], env=self.env
        )

    def make_bucket(self, bucket: str) -> None:
        self.aws("s3", "mb", f"s3://{bucket}")

    def put(self, source: Path, bucket: str, key: str) -> None:
        self.aws("s3", "cp", str(source), f"s3://{bucket}/{key}", "--only-show-errors")

    def put_tree(self, source: Path, bucket: str, prefix: str) -> None:
        self.aws(
            "s3", "cp", str(source), f"s3://{bucket}/{prefix}", "--recursive",
            "--only-show-errors",
        )  # fmt: skip

    def get(self, bucket: str, key: str, target: Path) -> None:
        self.aws("s3", "cp", f"s3://{bucket}/{key}", str(target), "--only-show-errors")

    def get_range(self, bucket: str, key: str, first: int, last: int) -> bytes:
        target = self.workdir / "range.out"
        self.aws(
            "s3api", "get-object", "--bucket", bucket, "--key", key,
            "--range", f"bytes={first}-{last}", str(target),
        )  # fmt: skip
        return target.read_bytes()

    def list(self, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
        output = self.aws(
            "s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix,
            "--delimiter", "/", "--output", "json",
        )  # fmt: skip
        answer = json.loads(output) if output.strip() else {}
        return (
            [o["Key"] for o in answer.get("Contents") or []],
            [p["Prefix"] for p in answer.get("CommonPrefixes") or []],
        )

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        self.aws(
            "s3", "cp", f"s3://{bucket}/{source_key}", f"s3://{bucket}/{target_key}",
            "--only-show-errors",
        )  # fmt: skip

    def delete(self, bucket: str, key: str) -> None:
        self.aws("s3", "rm", f"s3://{bucket}/{key}", "--only-show-errors")

    def presign(self, bucket: str, key: str) -> str:
        return self.aws("s3", "presign", f"s3://{bucket}/{key}").strip()

    def upload_log(self, source: Path, bucket: str, key: str) -> str:
        return self.aws("s3", "cp", str(source), f"s3://{bucket}/{key}", "--debug")


# --- s3cmd ------------------------------------------------------------------


class S3cmdClient(Client):
    """s3cmd with SigV4; it checks each upload's (and part's) MD5 ETag."""

    name = "s3cmd"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(endpoint, workdir)
        host = endpoint.removeprefix("http://")
        self.config = workdir / "s3cfg"
        self.config.write_text(
            "[default]\n"
            f"access_key = {DUMMY_KEY}\n"
            f"secret_key = {DUMMY_SECRET}\n"
            f"host_base = {host}\n"
            f"host_bucket = {host}\n"
            "use_https = False\n"
            "signature_v2 = False\n"
            f"bucket_location = {CLIENT_REGION}\n"
            f"multipart_chunk_size_mb = {PART_SIZE // (1024 * 1024)}\n"
            "max_retries = 1\n"
            # Do not copy ACLs on `cp`: SeaweedFS refuses PutObjectAcl to
            # assume-role session credentials (403), with or without a proxy.
            "acl_public = False\n"
        )
        self.env = clean_environ(HOME=str(workdir))

    def s3cmd(self, *args: str) -> str:
        return self.run(
            [bin_path("s3cmd"), "-c", str(self.config), *args], env=self.env
        )

    def make_bucket(self, bucket: str) -> None:
        self.s3cmd("mb", f"s3://{bucket}")

    def put(self, source: Path, bucket: str, key: str) -> None:
        self.s3cmd("put", str(source), f"s3://{bucket}/{key}")

    def put_tree(self, source: Path, bucket: str, prefix: str) -> None:
        self.s3cmd("put", "--recursive", f"{source}/", f"s3://{bucket}/{prefix}")

    def get(self, bucket: str, key: str, target: Path) -> None:
        self.s3cmd("get", "--force", f"s3://{bucket}/{key}", str(target))

    def get_range(self, bucket: str, key: str, first: int, last: int) -> bytes:
        raise Unsupported("s3cmd has no ranged GET")

    def list(self, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
        # s3cmd lists with ListObjects (v1) and delimiter "/".
        keys, prefixes = [], []
        root = f"s3://{bucket}/"
        for line in self.s3cmd("ls", root + prefix).splitlines():
            if root not in line:
                continue
            name = line[line.index(root) + len(root) :]
            if line.lstrip().startswith("DIR"):
                prefixes.append(name)
            else:
                keys.append(name)
        return keys, prefixes

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        self.s3cmd("cp", f"s3://{bucket}/{source_key}", f"s3://{bucket}/{target_key}")

    def delete(self, bucket: str, key: str) -> None:
        self.s3cmd("del", f"s3://{bucket}/{key}")

    def presign(self, bucket: str, key: str) -> str:
        return self.s3cmd("signurl", f"s3://{bucket}/{key}", "+300").strip()

    def upload_log(self, source: Path, bucket: str, key: str) -> str:
        return self.s3cmd("--debug", "put", str(source), f"s3://{bucket}/{key}")


# --- rclone -----------------------------------------------------------------


class RcloneClient(Client):
    """rclone's S3 backend, provider Other; Content-MD5 on every upload."""

    name = "rclone"
    remote = "proxy"

    def __init__(self, endpoint: str, workdir: Path) -> None:
        super().__init__(endpoint, workdir)
        self.config = workdir / "rclone.conf"
        self.config.write_text(
            f"[{self.remote}]\n"
            "type = s3\n"
            "provider = Other\n"
            f"access_key_id = {DUMMY_KEY}\n"
            f"secret_access_key = {DUMMY_SECRET}\n"
            f"endpoint = {endpoint}\n"
            f"region = {CLIENT_REGION}\n"
            "force_path_style = true\n"
            "list_version = 2\n"
            "no_check_bucket = true\n"
            # Multipart above 16 MiB, in 8 MiB parts (default: above 200 MiB).
            "upload_cutoff = 16Mi\n"
            f"chunk_size = {PART_SIZE // (1024 * 1024)}Mi\n"
        )
        self.env = clean_environ(HOME=str(workdir))

    def rclone(self, *args: str) -> str:
        return self.run(
            [bin_path("rclone"), "--config", str(self.config), "--retries", "1",
             "--low-level-retries", "1", *args],
            env=self.env,
        )  # fmt: skip

    def path(self, bucket: str, key: str = "") -> str:
        return f"{self.remote}:{bucket}/{key}"

    def make_bucket(self, bucket: str) -> None:
        # no_check_bucket keeps uploads from re-creating the bucket; mkdir
        # must still create it.
        self.rclone("mkdir", "--s3-no-check-bucket=false", self.path(bucket))

    def put(self, source: Path, bucket: str, key: str) -> None:
        self.rclone("copyto", str(source), self.path(bucket, key))

    def put_tree(self, source: Path, bucket: str, prefix: str) -> None:
        self.rclone("copy", str(source), self.path(bucket, prefix))

    def get(self, bucket: str, key: str, target: Path) -> None:
        self.rclone("copyto", self.path(bucket, key), str(target))

    def get_range(self, bucket: str, key: str, first: int, last: int) -> bytes:
        result = subprocess.run(
            [bin_path("rclone"), "--config", str(self.config), "cat",
             "--offset", str(first), "--count", str(last - first + 1),
             self.path(bucket, key)],
            capture_output=True, env=self.env, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ClientFailed(result.stderr.decode(errors="replace")[-4000:])
        return result.stdout

    def list(self, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
        # rclone lists one "directory" at a time: ListObjectsV2 with the
        # directory as prefix and delimiter "/".
        entries = json.loads(self.rclone("lsjson", self.path(bucket, prefix)))
        keys = [prefix + e["Path"] for e in entries if not e["IsDir"]]
        prefixes = [prefix + e["Path"] + "/" for e in entries if e["IsDir"]]
        return sorted(keys), sorted(prefixes)

    def copy(self, bucket: str, source_key: str, target_key: str) -> None:
        # Within one remote rclone copies server-side (CopyObject).
        self.rclone(
            "copyto", self.path(bucket, source_key), self.path(bucket, target_key)
        )

    def delete(self, bucket: str, key: str) -> None:
        self.rclone("deletefile", self.path(bucket, key))

    def presign(self, bucket: str, key: str) -> str:
        return self.rclone("link", "--expire", "5m", self.path(bucket, key)).strip()

    def upload_log(self, source: Path, bucket: str, key: str) -> str:
        return self.rclone(
            "--dump", "headers", "copyto", str(source), self.path(bucket, key)
        )


CLIENTS: dict[str, type[Client]] = {
    cls.name: cls for cls in (Boto3Client, AwsCliClient, S3cmdClient, RcloneClient)
}
