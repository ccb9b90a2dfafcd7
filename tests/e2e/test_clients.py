"""The real-client matrix: boto3, awscli, s3cmd and rclone with dummy keys,
through `signproxy run`, to SeaweedFS, with the local and the remote signer.

* `local`: SigV4 with temporary credentials from the emulator's assume-role;
* `remote`: object-store-authorization from the emulator for what it covers,
  with the role configured so that requests it cannot cover (extra x-amz-*
  headers such as boto3's checksums or s3cmd's metadata, signed aws-chunked
  bodies) are signed locally.  Requests the remote signer alone must refuse
  are proven in test_remote.py.

Every download is compared with what was uploaded by SHA-256.  Uploads carry
an integrity check the store or the client verifies (checksums for
boto3/awscli, Content-MD5 for rclone, the MD5 ETag that s3cmd compares), as
`test_uploads_carry_an_integrity_check` shows from each program's own trace.
The 64 MiB file is made once per session; each client and signer shares one
bucket and one proxy per signer serves the whole module.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from signproxy.seaweed import LocalStore, free_port
from tests.e2e.clients import CLIENTS, Client, Unsupported
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import proxy_command, wait_listening

LARGE_SIZE = 64 * 1024 * 1024
SIGNERS = ("local", "remote")

# Object keys that trip up URL encoding and canonicalisation.
AWKWARD_KEYS = (
    "with space.txt",
    "unicodé/ключ/キー.bin",
    "plus+sign+.txt",
    "100% sure.txt",
    "equals=sign&and.txt",
    "double//slash.txt",
)


@dataclass
class MatrixProxy:
    """One `signproxy run` for the module, and where to read its metrics."""

    signer: str
    endpoint: str
    metrics: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def signed_by(self) -> dict[str, float]:
        """Signatures produced so far, by signer ("local", "remote", "cache")."""
        text = httpx.get(self.metrics + "/metrics").text
        pattern = r'^signproxy_signing_duration_seconds_count\{signer="(\w+)"\} (\S+)$'
        return {
            name: float(count)
            for name, count in re.findall(pattern, text, re.MULTILINE)
        }


def start_matrix_proxy(
    signer: str,
    store: LocalStore,
    emulator: EmulatorHandle,
    log_path: Path,
    *extra: str,
) -> MatrixProxy:
    port, metrics_port = free_port(), free_port()
    args = proxy_command(
        upstream=store.endpoint,
        listen=f"127.0.0.1:{port}",
        signer=signer,
        sts_endpoint=emulator.endpoint,
        role_indicator=emulator.role_indicator,
        metrics_listen=f"127.0.0.1:{metrics_port}",
    ) + list(extra)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIGNPROXY_", "SCP_", "AWS_"))
    }
    env.update(emulator.env())
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    wait_listening("127.0.0.1", port, process, log_path)
    return MatrixProxy(
        signer,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{metrics_port}",
        process,
        log_path,
    )


def stop_matrix_proxy(proxy: MatrixProxy) -> None:
    proxy.process.send_signal(signal.SIGTERM)
    try:
        code = proxy.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proxy.process.kill()
        proxy.process.wait()
        raise AssertionError(f"proxy did not stop; log {proxy.log_path}") from None
    assert code == 0, f"proxy exited {code}; log {proxy.log_path}"


@pytest.fixture(scope="module", params=SIGNERS)
def matrix_proxy(
    request: pytest.FixtureRequest,
    store: LocalStore,
    emulator: EmulatorHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MatrixProxy]:
    log_path = tmp_path_factory.mktemp("proxy") / f"{request.param}.log"
    proxy = start_matrix_proxy(request.param, store, emulator, log_path)
    yield proxy
    stop_matrix_proxy(proxy)


@pytest.fixture(scope="module", params=sorted(CLIENTS))
def client_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def client(
    client_name: str,
    matrix_proxy: MatrixProxy,
    tmp_path_factory: pytest.TempPathFactory,
) -> Client:
    workdir = tmp_path_factory.mktemp(f"{client_name}-{matrix_proxy.signer}")
    return CLIENTS[client_name](matrix_proxy.endpoint, workdir)


@pytest.fixture(scope="module")
def bucket(client: Client, matrix_proxy: MatrixProxy) -> str:
    """One bucket per client and signer, made by the client itself."""
    name = f"m-{client.name}-{matrix_proxy.signer}-{os.urandom(4).hex()}"
    client.make_bucket(name)
    return name


@pytest.fixture(scope="session")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """64 MiB of random bytes, written once, and their SHA-256."""
    path = tmp_path_factory.mktemp("large") / "large.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(LARGE_SIZE // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    return path, digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while block := data.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_small_objects_with_awkward_keys_round_trip(client, bucket, tmp_path):
    for n, key in enumerate(AWKWARD_KEYS):
        body = f"{n}: {key}\n".encode() + os.urandom(1000)
        source = write(tmp_path / f"up-{n}", body)
        client.put(source, bucket, "keys/" + key)

        target = tmp_path / f"down-{n}"
        client.get(bucket, "keys/" + key, target)
        assert sha256_file(target) == hashlib.sha256(body).hexdigest(), key


def test_large_upload_get_and_ranged_get(client, bucket, large_file, tmp_path):
    source, digest = large_file
    key = "large/64 MiB+ü.bin"
    client.put(source, bucket, key)
    try:
        target = tmp_path / "large.out"
        client.get(bucket, key, target)
        assert target.stat().st_size == LARGE_SIZE
        assert sha256_file(target) == digest
        target.unlink()

        first, last = 9 * 1024 * 1024 - 100, 17 * 1024 * 1024 + 99  # spans parts
        with open(source, "rb") as data:
            data.seek(first)
            expected = data.read(last - first + 1)
        try:
            assert client.get_range(bucket, key, first, last) == expected
        except Unsupported as reason:
            pytest.skip(f"ranged GET: {reason}")
    finally:
        client.delete(bucket, key)


def test_list_v2_with_prefix_and_delimiter(client, bucket, matrix_proxy, tmp_path):
    tree = tmp_path / "tree"
    for name in ("a/1", "a/2", "a/b/3", "c/4", "top"):
        write(tree / name, name.encode())
    client.put_tree(tree, bucket, "list/")
    before = matrix_proxy.signed_by()

    assert client.list(bucket, "list/a/") == (["list/a/1", "list/a/2"], ["list/a/b/"])
    assert client.list(bucket, "list/") == (["list/top"], ["list/a/", "list/c/"])

    after = matrix_proxy.signed_by()
    signers = {name for name in after if after[name] > before.get(name, 0)}
    if matrix_proxy.signer == "remote":
        # A listing carries no extra x-amz-* header: the remote signer (or
        # its cache of identical requests) signs it, not the fallback.
        assert signers, (before, after)
        assert signers <= {"remote", "cache"}, (before, after)
    else:
        assert signers == {"local"}, (before, after)


def test_copy_then_delete(client, bucket, tmp_path):
    body = os.urandom(5000)
    source_key, target_key = "copy/src ü+=%.txt", "copy/dst+1.txt"
    client.put(write(tmp_path / "src", body), bucket, source_key)
    client.copy(bucket, source_key, target_key)

    target = tmp_path / "dst"
    client.get(bucket, target_key, target)
    assert target.read_bytes() == body

    client.delete(bucket, source_key)
    assert client.list(bucket, "copy/") == ([target_key], [])


def test_presigned_get_through_the_proxy(client, bucket, matrix_proxy, tmp_path):
    body = os.urandom(2048)
    key = "presign/shared file+ü.txt"
    client.put(write(tmp_path / "shared", body), bucket, key)
    try:
        url = client.presign(bucket, key)
    except Unsupported as reason:
        pytest.skip(f"presign: {reason}")
    assert url.startswith(matrix_proxy.endpoint + "/"), url

    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == body


def test_presigned_get_of_a_deleted_key_is_the_stores_404(client, bucket, tmp_path):
    # The store's own XML error comes back through the proxy unchanged.
    client.put(write(tmp_path / "gone", b"soon gone"), bucket, "presign/gone.txt")
    url = client.presign(bucket, "presign/gone.txt")
    client.delete(bucket, "presign/gone.txt")
    response = httpx.get(url)
    assert response.status_code == 404
    assert b"<Code>NoSuchKey</Code>" in response.content


CHECKSUM_HEADER = r"(?i)x-amz-checksum-(crc32c?|crc64nvme|sha1|sha256)\b"


def upload_checks(client_name: str, trace: str) -> list[bool]:
    """For each object or part upload (a PUT with a body) in a client's own
    trace: does it carry a check that the store or the client verifies?"""
    if client_name in ("boto3", "awscli"):
        # One line per request with its headers: a checksum header each.
        lines = trace.splitlines()
        if client_name == "boto3":
            lines = [line for line in lines if line.startswith("PUT ")]
        else:
            lines = [
                line
                for line in lines
                if "Sending http request" in line and "method=PUT," in line
            ]
        return [bool(re.search(CHECKSUM_HEADER, line)) for line in lines]
    if client_name == "rclone":
        # --dump headers: one block per request; Content-MD5 on each upload.
        blocks = trace.split("HTTP REQUEST")[1:]
        puts = [b for b in blocks if re.search(r"DEBUG : PUT /[^/\s]+/\S", b)]
        return [bool(re.search(r"(?im)^content-md5: \S+", b)) for b in puts]
    # s3cmd compares the MD5 of what it sent with the ETag of each upload.
    # (each signed request's canonical form is traced; it starts with PUT)
    puts = re.findall(r"(?m)^PUT$", trace)
    verified = re.findall(
        r"MD5 sums: computed=([0-9a-f]{32}), received=\"?\1\"?", trace
    )
    return [n < len(verified) for n in range(len(puts))]


@pytest.mark.parametrize("size", [200 * 1024, 20 * 1024 * 1024])
def test_uploads_carry_an_integrity_check(client, bucket, tmp_path, size):
    """Each object or part upload has a check the store or client verifies."""
    source = write(tmp_path / "traced", os.urandom(size))
    trace = client.upload_log(source, bucket, f"traced/{size}")

    checks = upload_checks(client.name, trace)
    assert len(checks) == (1 if size < 16 * 1024 * 1024 else 3), trace[-3000:]
    assert all(checks), trace[-3000:]

    target = tmp_path / "traced.out"
    client.get(bucket, f"traced/{size}", target)
    assert sha256_file(target) == sha256_file(source)
