"""A real Prometheus scrapes real proxies; every dashboard and alert query runs.

Two `signproxy run` processes serve real boto3 traffic to SeaweedFS: one signs
locally with temporary credentials from the STS emulator (assume-role), one
asks the emulator for each authorization (remote signer, with its cache).
Prometheus (the Debian package) scrapes both management ports every second
and loads the alert rules.  Then every panel query of the Grafana dashboard
and every alert expression goes through Prometheus' HTTP API: each must parse,
the panels must return data, and on this healthy traffic no alert may fire.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from signproxy.seaweed import free_port
from tests import polling
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import RunningProxy, StartProxy

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "grafana" / "dashboards" / "signproxy.json"
RULES = ROOT / "grafana" / "alerts" / "signproxy.rules.yaml"
JOB = "signproxy"
DEADLINE = 60.0
poll = functools.partial(polling.poll, timeout=DEADLINE, interval=0.2)

# Grafana's variables as a user viewing all jobs would have them.
VARIABLES = {"$__rate_interval": "1m", "$job": ".*"}


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is None:
        pytest.skip("prometheus not installed (Debian package prometheus; .ci/run)")
    return found


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200, f"{expr}\n{body}"
        assert body["status"] == "success", f"{expr}\n{body}"
        return body["data"]

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params)
        response.raise_for_status()
        return response.json()["data"]


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        binary = prometheus_binary()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        log_path = tmp_path / "prometheus.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = Prometheus(f"http://127.0.0.1:{port}", process, log_path)
        started.append(server)

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(
                    f"prometheus exited with {process.returncode}:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            try:
                return httpx.get(f"{server.url}/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        poll(ready, "prometheus to be ready")
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def s3_client(proxy: RunningProxy) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        aws_access_key_id="AKIDUMMYDUMMYDUMMY00",
        aws_secret_access_key="dummy-secret-the-proxy-throws-away",
        region_name="us-east-1",
        # No CRC checksum headers: the remote signer signs only the headers
        # SCP's authorization covers (what SCP's documented clients send).
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def traffic(proxy: RunningProxy, bucket: str) -> None:
    """A little of everything: PUT (small, larger), GET, HEAD, LIST, 404, DELETE."""
    s3 = s3_client(proxy)
    s3.create_bucket(Bucket=bucket)
    for number in range(5):
        body = bytes([number]) * (1024 * (number + 1))
        s3.put_object(Bucket=bucket, Key=f"small/{number}", Body=body)
        assert s3.get_object(Bucket=bucket, Key=f"small/{number}")["Body"].read() == (
            body
        )
        s3.head_object(Bucket=bucket, Key=f"small/{number}")
    s3.put_object(Bucket=bucket, Key="larger", Body=b"x" * (2 * 1024 * 1024))
    s3.list_objects_v2(Bucket=bucket)
    with pytest.raises(ClientError, match="404"):
        s3.head_object(Bucket=bucket, Key="missing")
    for key in [*(f"small/{n}" for n in range(5)), "larger"]:
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)


def substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def panels() -> list[dict[str, Any]]:
    board = json.loads(DASHBOARD.read_text())
    return [panel for panel in board["panels"] if panel["type"] != "row"]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def finite_values(data: dict[str, Any]) -> list[float]:
    values = [float(series["value"][1]) for series in data["result"]]
    return [value for value in values if math.isfinite(value)]


@pytest.mark.slow
def test_dashboard_and_alerts_work_on_real_scrapes(
    start_proxy: StartProxy,
    start_prometheus: Any,
    emulator: EmulatorHandle,
) -> None:
    sts = {
        "static_keys": False,
        "env": emulator.env(),
        "sts_endpoint": emulator.endpoint,
        "log_format": "json",
    }
    local = start_proxy(
        signer="local",
        role_indicator=emulator.role_indicator,
        metrics_listen=f"127.0.0.1:{free_port()}",
        **sts,
    )
    remote = start_proxy(
        signer="remote", metrics_listen=f"127.0.0.1:{free_port()}", **sts
    )
    targets = [_metrics_target(proxy) for proxy in (local, remote)]
    prometheus = start_prometheus(targets)

    # Both proxies scraped and ready before traffic, so rates see it arrive.
    poll(
        lambda: (
            len(
                prometheus.query(
                    f'up{{job="{JOB}"}} == 1 and on(instance) signproxy_ready == 1'
                )["result"]
            )
            == 2
        ),
        "both proxies scraped and ready",
    )
    buckets = {proxy.port: f"prom-{uuid.uuid4().hex[:12]}" for proxy in (local, remote)}
    for proxy in (local, remote):
        traffic(proxy, buckets[proxy.port])

    # Every panel query parses; each returns finite data once scraped.
    pending = {
        (panel["title"], target["refId"]): substitute(target["expr"])
        for panel in panels()
        for target in panel["targets"]
    }

    def all_have_data() -> bool:
        for key, expr in list(pending.items()):
            if finite_values(prometheus.query(expr)):
                del pending[key]
        return not pending

    poll(all_have_data, f"data for every panel query (still empty: {pending})")

    # Traffic really flowed through both proxies, by method and signer.
    rate = prometheus.query(
        f'sum by (instance) (increase(signproxy_requests_total{{job="{JOB}", '
        'outcome="forwarded", status_class="2xx"}[1m]))'
    )
    assert {s["metric"]["instance"] for s in rate["result"]} == set(targets)
    assert all(float(s["value"][1]) > 0 for s in rate["result"])
    signers = prometheus.query(
        "sum by (signer) (signproxy_signing_duration_seconds_count) > 0"
    )
    assert {s["metric"]["signer"] for s in signers["result"]} >= {"local", "remote"}
    expiry = prometheus.query(
        "signproxy_credentials_expiry_timestamp_seconds - time() > 0"
    )
    assert len(expiry["result"]) == 1

    # The dashboard's job variable finds this job.
    jobs = prometheus.get(
        "/api/v1/label/job/values", **{"match[]": "signproxy_build_info"}
    )
    assert jobs == [JOB]

    # Every alert expression parses and stays quiet on healthy traffic.
    for rule in alert_rules():
        data = prometheus.query(rule["expr"])
        assert data["result"] == [], (rule["alert"], data["result"])

    # Prometheus loaded and evaluated every rule without error.
    def rules_evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["groups"]
        loaded = [rule for group in groups for rule in group["rules"]]
        evaluated = [
            r for r in loaded if not r.get("lastEvaluation", "0001").startswith("0001")
        ]
        return loaded if len(evaluated) == len(alert_rules()) else []

    # The proxies' JSON logs: one object per line, access lines without bucket
    # names, and no secret.
    for proxy in (local, remote):
        check_json_log(proxy, buckets[proxy.port], emulator.secret_key)

    loaded = poll(rules_evaluated, "every alert rule evaluated")
    assert {rule["name"] for rule in loaded} == {r["alert"] for r in alert_rules()}
    for rule in loaded:
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule


def _metrics_target(proxy: RunningProxy) -> str:
    [address] = [
        proxy.args[index + 1]
        for index, arg in enumerate(proxy.args)
        if arg == "--metrics-listen"
    ]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
    return address


def check_json_log(proxy: RunningProxy, bucket: str, secret: str) -> None:
    text = proxy.log_text()
    assert secret not in text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    access = [e for e in entries if e["logger"] == "signproxy.access"]
    assert len(access) >= 20, len(access)
    classes = {e["access"]["path_class"] for e in access}
    assert {"bucket", "object"} <= classes
    for entry in access:
        assert bucket not in json.dumps(entry)
        assert entry["access"]["status"] in (200, 204, 404)
