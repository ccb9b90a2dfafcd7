"""`signproxy bench`: the report's schema and honesty, not its figures.

No test here asserts a timing: the targets are measured by the bench.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from signproxy import bench, bench_load, bench_proxy, bench_upload, cli, sigv4
from signproxy.seaweed import Identity, LocalStore

LOCAL_SIGN_CASES = {"sign/botocore", "sign/local-warm", "sign/local-cold"}
SIGN_CASES = LOCAL_SIGN_CASES | {"sign/remote-hit", "sign/remote-miss"}
CASE_FIELDS = {
    "name",
    "unit",
    "better",
    "median",
    "p99",
    "baseline",
    "ratio",
    "rounds",
    "details",
}


def run_bench(*args: str) -> int:
    return cli.main(["bench", *args, "--no-progress"])


def load_report(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def check_schema(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stable schema, and every ratio equal to median / baseline median."""
    assert set(report) == {"host", "versions", "settings", "cases"}
    assert {"cpu", "cores", "os", "python"} <= set(report["host"])
    assert {"signproxy", "mitmproxy", "botocore", "python", "weed"} <= set(
        report["versions"]
    )
    assert report["versions"]["signproxy"]
    cases = {case["name"]: case for case in report["cases"]}
    assert len(cases) == len(report["cases"]), "case names must be unique"
    for case in cases.values():
        assert set(case) == CASE_FIELDS
        assert case["median"] > 0
        if case["baseline"] is None:
            assert case["ratio"] is None
        else:
            base = cases[case["baseline"]]
            assert base["unit"] == case["unit"]
            assert case["ratio"] == pytest.approx(case["median"] / base["median"])
        if case["better"] == bench.HIGHER:
            assert case["p99"] <= case["median"]
        else:
            assert case["p99"] >= case["median"]
    return cases


# --- the harness -----------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert bench.percentile(samples, 0.99) == 99.0
    assert bench.percentile(samples, 0.01) == 1.0
    assert bench.percentile([7.0], 0.99) == 7.0


def test_p99_is_the_tail_in_the_bad_direction() -> None:
    throughput = bench.Case("t", "req/s", [100.0, 90.0, 10.0])
    latency = bench.Case("l", "ms", [1.0, 2.0, 30.0], better=bench.LOWER)
    assert (throughput.median, throughput.p99) == (90.0, 10.0)
    assert (latency.median, latency.p99) == (2.0, 30.0)


def test_ratio_is_median_over_the_baselines_median() -> None:
    report = bench.Report({}, {}, {})
    report.add(
        bench.Case("base", "sig/s", [10.0, 20.0, 30.0]),
        bench.Case("ours", "sig/s", [50.0, 60.0, 70.0], baseline="base"),
    )
    assert report.ratio(report.case("ours")) == 3.0
    assert report.ratio(report.case("base")) is None


def test_case_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="case 'empty' has no samples"):
        bench.Case("empty", "sig/s", [])


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GiB", 1 << 30), ("256MiB", 256 << 20), ("64K", 65536), ("1000", 1000)],
)
def test_parse_size(text: str, size: int) -> None:
    assert bench.parse_size(text) == size
    assert bench.parse_size(bench.size_label(size)) == size


def test_parse_size_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"invalid size '1\.5GiB'"):
        bench.parse_size("1.5GiB")


def test_failures_refuse_the_run_with_count_and_first_error() -> None:
    failures = bench.Failures()
    failures.record("403 SignatureDoesNotMatch")
    failures.record("connection reset")
    with pytest.raises(
        bench.BenchFailed,
        match=r"proxy/get-c1: 2 of 10 requests failed; first error: 403 Sig",
    ):
        failures.check("proxy/get-c1", 10)


# --- bench sign --------------------------------------------------------------


def test_bench_sign_writes_the_stable_schema(tmp_path: Path) -> None:
    out = tmp_path / "sign.json"
    plot = tmp_path / "sign.png"

    status = run_bench(
        "sign",
        "--duration",
        "0.5",
        "--rounds",
        "3",
        "--sign-concurrency",
        "4",
        "--json",
        str(out),
        "--plot",
        str(plot),
    )

    assert status == 0
    report = load_report(out)
    cases = check_schema(report)
    assert set(cases) == SIGN_CASES
    for name in SIGN_CASES - {"sign/botocore"}:
        assert cases[name]["baseline"] == "sign/botocore"
    assert set(cases["sign/remote-hit"]["details"]["signed_by"]) == {"cache"}
    assert set(cases["sign/remote-miss"]["details"]["signed_by"]) == {"remote"}
    assert cases["sign/remote-miss"]["details"]["concurrency"] == 4
    assert all(case["rounds"] == 3 for case in cases.values())
    assert report["settings"]["duration"] == 0.5
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_bench_sign_with_a_fixed_count(tmp_path: Path) -> None:
    out = tmp_path / "sign.json"

    assert run_bench("sign", "--count", "50", "--no-remote", "--json", str(out)) == 0

    assert set(check_schema(load_report(out))) == LOCAL_SIGN_CASES


def test_bench_rejects_a_bad_option_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_bench("sign", "--rounds", "0") == 2
    assert "--rounds must be >= 1, got 0" in capsys.readouterr().err


# --- bench proxy ---------------------------------------------------------------


@pytest.fixture
def bench_store_env(
    monkeypatch: pytest.MonkeyPatch, store_identity: Identity
) -> Identity:
    """`--store` keys for the bench, from the environment as it requires."""
    monkeypatch.setenv("SIGNPROXY_BENCH_STORE_ACCESS_KEY", store_identity.access_key)
    monkeypatch.setenv("SIGNPROXY_BENCH_STORE_SECRET_KEY", store_identity.secret_key)
    return store_identity


def test_bench_proxy_measures_signproxy_mitmdump_and_direct(
    store: LocalStore, bench_store_env: Identity, tmp_path: Path
) -> None:
    out = tmp_path / "proxy.json"

    status = run_bench(
        "proxy",
        "--store",
        store.endpoint,
        "--duration",
        "0.4",
        "--rounds",
        "2",
        "--concurrency",
        "1,2",
        "--json",
        str(out),
    )

    assert status == 0
    cases = check_schema(load_report(out))
    for op in ("get", "put"):
        for c in (1, 2):
            ours, stock, direct = (
                f"proxy/{op}-c{c}",
                f"proxy/mitmdump-{op}-c{c}",
                f"proxy/direct-{op}-c{c}",
            )
            assert cases[ours]["baseline"] == stock
            assert cases[stock]["baseline"] == direct
            assert cases[direct]["baseline"] is None
            assert cases[f"{ours}-p50"]["baseline"] == f"{direct}-p50"
            assert cases[f"{ours}-p99"]["unit"] == "ms"
            assert cases[f"{ours}-cpu"]["baseline"] == f"{stock}-cpu"
            assert cases[ours]["details"]["failed"] == 0
            assert cases[ours]["details"]["requests"] > 0


def test_bench_proxy_refuses_a_run_with_failed_requests(
    store: LocalStore,
    monkeypatch: pytest.MonkeyPatch,
    store_identity: Identity,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SIGNPROXY_BENCH_STORE_ACCESS_KEY", store_identity.access_key)
    monkeypatch.setenv("SIGNPROXY_BENCH_STORE_SECRET_KEY", "not-the-stores-secret")

    status = run_bench("proxy", "--store", store.endpoint, "--duration", "0.2")

    assert status == 1
    err = capsys.readouterr().err
    assert "refusing to report" in err
    assert "HTTP 403" in err
    assert "Signature=" not in err
    assert "SignatureProvided" not in err


def test_load_generator_counts_failures_and_check_refuses(
    store: LocalStore, store_identity: Identity
) -> None:
    host, _, port = store.endpoint.split("://", 1)[1].rpartition(":")
    wrong = sigv4.Credentials(store_identity.access_key, "wrong-secret")
    request = bench_proxy.raw_request(
        "GET", "/no-such-bucket-bench/x", f"{host}:{port}", wrong
    )
    spec = bench_load.LoadSpec(
        host=host,
        port=int(port),
        requests=[base64.b64encode(request).decode()],
        concurrency=2,
        rounds=2,
        seconds=1.0,
        count=6,
    )

    result = bench_proxy.run_load(spec)

    assert [r.failed for r in result.rounds] == [6, 6]
    assert [r.done for r in result.rounds] == [0, 0]
    with pytest.raises(
        bench.BenchFailed,
        match=r"proxy/x: 12 of 12 requests failed; first error: HTTP 403",
    ):
        bench_proxy.check_load("proxy/x", result)


# --- bench upload ----------------------------------------------------------------


def test_bench_upload_reports_throughput_and_flat_memory_cases(
    store: LocalStore, bench_store_env: Identity, tmp_path: Path
) -> None:
    out = tmp_path / "upload.json"

    status = run_bench(
        "upload", "--store", store.endpoint, "--size", "4MiB", "--json", str(out)
    )

    assert status == 0
    cases = check_schema(load_report(out))
    for mode in ("signed", "unsigned", "client-hash"):
        for size in ("1MiB", "4MiB"):
            assert cases[f"upload/local-{mode}-{size}"]["baseline"] == (
                f"upload/direct-{mode}-{size}"
            )
            assert cases[f"upload/local-{mode}-{size}-rss"]["unit"] == "MiB RSS"
        assert cases[f"upload/local-{mode}-4MiB-rss"]["baseline"] == (
            f"upload/local-{mode}-1MiB-rss"
        )


def test_bench_upload_rejects_an_unknown_mode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_bench("upload", "--modes", "signed,gzip") == 2
    assert "--modes: invalid value 'signed,gzip'" in capsys.readouterr().err


def test_upload_body_is_generated_not_held() -> None:
    blocks = list(bench_upload.body_blocks(3 * bench_upload.BLOCK + 5))

    assert [len(b) for b in blocks] == [bench_upload.BLOCK] * 3 + [5]
    assert blocks[0] is blocks[1], "one block object is repeated, not copied"
