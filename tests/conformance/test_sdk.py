"""Conformance of cf-origin-sim with Cloudflare's official Python SDK (cloudflare==5.9.0).

Run through hack/sdk-conformance, which starts the simulator and sets CF_SIM_BASE_URL
(http://127.0.0.1:PORT/client/v4). Every operation of `client.cache.origin_cloud_regions`
is called; the SDK must parse each answer into its typed models and raise its typed
exceptions for our error codes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import threading
import urllib.request
from typing import Any

import pytest

import cloudflare
from cloudflare import AsyncCloudflare, Cloudflare, Omit
from cloudflare.types.cache import (
    OriginCloudRegionBulkDeleteResponse,
    OriginCloudRegionBulkUpdateResponse,
    OriginCloudRegionDeleteResponse,
    OriginCloudRegionGetResponse,
    OriginCloudRegionListResponse,
    OriginCloudRegionSupportedRegionsResponse,
    OriginCloudRegionUpdateResponse,
)

BASE_URL = os.environ["CF_SIM_BASE_URL"]
ADMIN_URL = BASE_URL.rsplit("/client/v4", 1)[0] + "/__sim"
ZONE = "023e105f4ecef8ad9ca31a8372d0c353"


def admin(method: str, path: str, body: Any = None) -> Any:
    """Calls a /__sim admin route and returns its JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(ADMIN_URL + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def op_count(op: str, status: str) -> int:
    return admin("GET", "/stats")["operations"][op]["by_status"].get(status, 0)


def seed(mappings: list[dict[str, str]]) -> None:
    admin("PUT", f"/zones/{ZONE}", {"mappings": mappings})


def error_code(exc: cloudflare.APIStatusError) -> int:
    assert isinstance(exc.body, dict), exc.body
    assert exc.body["success"] is False
    return exc.body["errors"][0]["code"]


@pytest.fixture(autouse=True)
def fresh_sim() -> None:
    admin("POST", "/reset")


@pytest.fixture
def client() -> Cloudflare:
    # No retries by default so error tests see the first answer; retry tests build their own.
    return Cloudflare(api_token="dev-token", base_url=BASE_URL, max_retries=0)


def test_update_get_delete(client: Cloudflare) -> None:
    ocr = client.cache.origin_cloud_regions
    created = ocr.update(
        "2001:DB8:0::1",
        zone_id=ZONE,
        body_origin_ip="2001:db8::1",
        vendor="gcp",
        region="us-central1",
    )
    assert isinstance(created, OriginCloudRegionUpdateResponse)
    assert created.origin_ip == "2001:db8::1"
    assert created.vendor == "gcp"
    assert created.region == "us-central1"
    assert isinstance(created.modified_on, dt.datetime)
    assert created.modified_on.tzinfo is not None

    got = ocr.get("2001:db8::1", zone_id=ZONE)
    assert isinstance(got, OriginCloudRegionGetResponse)
    assert got.origin_ip == "2001:db8::1"
    assert got.modified_on == created.modified_on

    # Idempotent PUT keeps modified_on; a real change moves it.
    again = ocr.update("2001:db8::1", zone_id=ZONE, body_origin_ip="2001:db8::1", vendor="gcp", region="us-central1")
    assert again is not None and again.modified_on == created.modified_on
    moved = ocr.update("2001:db8::1", zone_id=ZONE, body_origin_ip="2001:db8::1", vendor="aws", region="us-east-1")
    assert moved is not None and moved.vendor == "aws"

    deleted = ocr.delete("2001:db8::1", zone_id=ZONE)
    assert isinstance(deleted, OriginCloudRegionDeleteResponse)
    assert deleted.origin_ip == "2001:db8::1"

    with pytest.raises(cloudflare.NotFoundError) as exc:
        ocr.get("2001:db8::1", zone_id=ZONE)
    assert exc.value.status_code == 404
    assert error_code(exc.value) == 1142
    with pytest.raises(cloudflare.NotFoundError) as exc:
        ocr.delete("2001:db8::1", zone_id=ZONE)
    assert error_code(exc.value) == 1142


def test_list_auto_paginates(client: Cloudflare) -> None:
    seed([{"origin_ip": f"198.51.100.{i}", "vendor": "aws", "region": "us-east-1"} for i in range(45)])
    admin("DELETE", "/stats")

    first = client.cache.origin_cloud_regions.list(zone_id=ZONE)
    assert len(first.result) == 20
    assert first.result_info is not None and first.result_info.per_page == 20
    assert all(isinstance(m, OriginCloudRegionListResponse) for m in first.result)

    seen = [m.origin_ip for m in client.cache.origin_cloud_regions.list(zone_id=ZONE)]
    assert len(seen) == 45
    assert len(set(seen)) == 45
    assert seen == sorted(seen)
    # 1 page above, then pages 1-3 and the empty page 4 that ends the iteration.
    assert op_count("list", "200") == 5

    small = list(client.cache.origin_cloud_regions.list(zone_id=ZONE, per_page=7))
    assert [m.origin_ip for m in small] == seen

    with pytest.raises(cloudflare.BadRequestError) as exc:
        client.cache.origin_cloud_regions.list(zone_id=ZONE, per_page=101)
    assert error_code(exc.value) == 1146

    empty = client.cache.origin_cloud_regions.list(zone_id="9a7806061c88ada191ed06f989cc3dac")
    assert empty.result == []


def test_bulk_update(client: Cloudflare) -> None:
    resp = client.cache.origin_cloud_regions.bulk_update(
        zone_id=ZONE,
        body=[
            {"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"},
            {"origin_ip": "2001:DB8::1", "vendor": "gcp", "region": "us-central1"},
            {"origin_ip": "192.0.2.300", "vendor": "aws", "region": "us-east-1"},
            {"origin_ip": "192.0.2.2", "vendor": "aws", "region": "westeurope"},
        ],
    )
    assert isinstance(resp, OriginCloudRegionBulkUpdateResponse)
    assert [(s.origin_ip, s.vendor, s.region) for s in resp.succeeded] == [
        ("192.0.2.1", "aws", "us-east-1"),
        ("2001:db8::1", "gcp", "us-central1"),
    ]
    assert all(s.error is None for s in resp.succeeded)
    assert [f.origin_ip for f in resp.failed] == ["192.0.2.300", "192.0.2.2"]
    assert resp.failed[0].error == "Invalid or missing origin IP address."
    assert resp.failed[1].error == "Failed to validate region against cloud vendor"
    assert resp.failed[0].vendor is None

    too_many = [{"origin_ip": f"10.0.0.{i}", "vendor": "aws", "region": "us-east-1"} for i in range(101)]
    with pytest.raises(cloudflare.BadRequestError) as exc:
        client.cache.origin_cloud_regions.bulk_update(zone_id=ZONE, body=too_many)  # type: ignore[arg-type]
    assert error_code(exc.value) == 10001


def test_bulk_delete(client: Cloudflare) -> None:
    seed(
        [
            {"origin_ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"},
            {"origin_ip": "192.0.2.2", "vendor": "oci", "region": "us-ashburn-1"},
        ]
    )
    # The SDK method sends no body: nothing is deleted, and the typed result is empty.
    resp = client.cache.origin_cloud_regions.bulk_delete(zone_id=ZONE)
    assert isinstance(resp, OriginCloudRegionBulkDeleteResponse)
    assert resp.failed == [] and resp.succeeded == []
    assert len(admin("GET", f"/zones/{ZONE}")["mappings"]) == 2

    # With our documented body (array of {origin_ip}) through the SDK's generic client.
    raw = client.delete(
        f"/zones/{ZONE}/origin/cloud_regions/batch",
        body=[{"origin_ip": "192.0.2.1"}, {"origin_ip": "192.0.2.9"}],
        cast_to=object,
    )
    result = OriginCloudRegionBulkDeleteResponse.model_validate(raw["result"])  # type: ignore[index]
    assert [(s.origin_ip, s.vendor, s.region) for s in result.succeeded] == [("192.0.2.1", "aws", "us-east-1")]
    assert result.failed[0].origin_ip == "192.0.2.9"
    assert result.failed[0].error == "No origin cloud region mapping exists for the specified IP."


def test_supported_regions(client: Cloudflare) -> None:
    resp = client.cache.origin_cloud_regions.supported_regions(zone_id=ZONE)
    assert isinstance(resp, OriginCloudRegionSupportedRegionsResponse)
    assert resp.obtained_codes is True
    assert set(resp.vendors) == {"aws", "azure", "gcp", "oci"}
    us_east_1 = next(r for r in resp.vendors["aws"] if r.name == "us-east-1")
    assert us_east_1.upper_tier_colos == ["IAD", "EWR"]

    admin("PUT", f"/zones/{ZONE}/tiered-cache", {"enabled": False})
    with pytest.raises(cloudflare.BadRequestError) as exc:
        client.cache.origin_cloud_regions.supported_regions(zone_id=ZONE)
    assert error_code(exc.value) == 1155


def test_typed_errors(client: Cloudflare) -> None:
    ocr = client.cache.origin_cloud_regions
    with pytest.raises(cloudflare.BadRequestError) as exc:
        ocr.get("not-an-ip", zone_id=ZONE)
    assert error_code(exc.value) == 1146
    with pytest.raises(cloudflare.BadRequestError) as exc:
        ocr.update("192.0.2.1", zone_id=ZONE, body_origin_ip="192.0.2.2", vendor="aws", region="us-east-1")
    assert error_code(exc.value) == 1146
    with pytest.raises(cloudflare.BadRequestError) as exc:
        ocr.update("192.0.2.1", zone_id=ZONE, body_origin_ip="192.0.2.1", vendor="aws", region="mars-1")
    assert error_code(exc.value) == 1157
    with pytest.raises(cloudflare.BadRequestError) as exc:
        ocr.update("192.0.2.1", zone_id=ZONE, body_origin_ip="192.0.2.1", vendor="aws", region="europe-west1")
    assert error_code(exc.value) == 1156
    with pytest.raises(cloudflare.NotFoundError) as exc:
        ocr.list(zone_id="not-a-zone")
    assert error_code(exc.value) == 7003

    # Zone limit: fill the zone out of band, then one more through the SDK.
    seed([{"origin_ip": f"10.0.{i // 256}.{i % 256}", "vendor": "aws", "region": "us-east-1"} for i in range(3500)])
    with pytest.raises(cloudflare.PermissionDeniedError) as exc:
        ocr.update("192.0.2.1", zone_id=ZONE, body_origin_ip="192.0.2.1", vendor="aws", region="us-east-1")
    assert exc.value.status_code == 403
    assert error_code(exc.value) == 1164

    # Deletes refused (e.g. a token without delete rights).
    admin("PUT", "/faults", {"refuse_deletes": True})
    with pytest.raises(cloudflare.PermissionDeniedError) as exc:
        ocr.delete("10.0.0.1", zone_id=ZONE)
    assert error_code(exc.value) == 9109
    with pytest.raises(cloudflare.PermissionDeniedError):
        ocr.bulk_delete(zone_id=ZONE)

    admin("PUT", "/faults", {"rate_1140": 1.0})
    with pytest.raises(cloudflare.InternalServerError) as exc:
        ocr.list(zone_id=ZONE)
    assert error_code(exc.value) == 1140


def test_authentication_errors() -> None:
    wrong = Cloudflare(api_token="not-the-token", base_url=BASE_URL, max_retries=0)
    with pytest.raises(cloudflare.PermissionDeniedError) as exc:
        wrong.cache.origin_cloud_regions.list(zone_id=ZONE)
    assert error_code(exc.value) == 10000

    # Explicitly omitting the header (per request, as the SDK allows) sends no credentials.
    anonymous = Cloudflare(api_token="unused", base_url=BASE_URL, max_retries=0)
    with pytest.raises(cloudflare.AuthenticationError) as exc:
        anonymous.cache.origin_cloud_regions.list(zone_id=ZONE, extra_headers={"Authorization": Omit()})
    assert exc.value.status_code == 401
    assert error_code(exc.value) == 10000


def test_legacy_pair_auth() -> None:
    admin("PUT", "/auth", {"tokens": ["dev-token"], "auth_email": "ops@example.com", "auth_key": "global-key"})
    legacy = Cloudflare(api_email="ops@example.com", api_key="global-key", base_url=BASE_URL, max_retries=0)
    created = legacy.cache.origin_cloud_regions.update(
        "192.0.2.1", zone_id=ZONE, body_origin_ip="192.0.2.1", vendor="azure", region="westeurope"
    )
    assert created is not None and created.region == "westeurope"
    assert [m.origin_ip for m in legacy.cache.origin_cloud_regions.list(zone_id=ZONE)] == ["192.0.2.1"]

    bad = Cloudflare(api_email="ops@example.com", api_key="wrong", base_url=BASE_URL, max_retries=0)
    with pytest.raises(cloudflare.PermissionDeniedError):
        bad.cache.origin_cloud_regions.list(zone_id=ZONE)


def test_sdk_retries_429_until_it_passes() -> None:
    client = Cloudflare(api_token="dev-token", base_url=BASE_URL, max_retries=2)
    admin("PUT", "/faults", {"rate_429": 1.0, "retry_after_secs": 1})
    # The SDK waits Retry-After (1 s) before retrying; lift the fault meanwhile.
    timer = threading.Timer(0.3, lambda: admin("PUT", "/faults", {}))
    timer.start()
    try:
        page = client.cache.origin_cloud_regions.list(zone_id=ZONE)
    finally:
        timer.join()
    assert page.result == []
    assert op_count("list", "429") == 1
    assert op_count("list", "200") == 1


def test_sdk_gives_up_after_its_retries() -> None:
    client = Cloudflare(api_token="dev-token", base_url=BASE_URL, max_retries=2)
    admin("PUT", "/faults", {"rate_429": 1.0, "retry_after_secs": 1})
    with pytest.raises(cloudflare.RateLimitError) as exc:
        client.cache.origin_cloud_regions.get("192.0.2.1", zone_id=ZONE)
    assert exc.value.response.headers["retry-after"] == "1"
    assert error_code(exc.value) == 10013
    assert op_count("get", "429") == 3


def test_raw_response_headers(client: Cloudflare) -> None:
    raw = client.cache.origin_cloud_regions.with_raw_response.list(zone_id=ZONE)
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    assert raw.parse().result == []


def test_async_client() -> None:
    async def run() -> None:
        client = AsyncCloudflare(api_token="dev-token", base_url=BASE_URL, max_retries=0)
        await client.cache.origin_cloud_regions.update(
            "192.0.2.7", zone_id=ZONE, body_origin_ip="192.0.2.7", vendor="oci", region="us-ashburn-1"
        )
        got = await client.cache.origin_cloud_regions.get("192.0.2.7", zone_id=ZONE)
        assert got is not None and got.vendor == "oci"
        seen = [m.origin_ip async for m in client.cache.origin_cloud_regions.list(zone_id=ZONE)]
        assert seen == ["192.0.2.7"]
        regions = await client.cache.origin_cloud_regions.supported_regions(zone_id=ZONE)
        assert regions is not None and regions.obtained_codes
        await client.close()

    asyncio.run(run())


def test_older_family_through_generic_client(client: Cloudflare) -> None:
    """5.9.0 has no methods for /cache/origin_cloud_regions; its generic calls reach it."""
    prefix = f"/zones/{ZONE}/cache/origin_cloud_regions"
    created = client.post(prefix, body={"ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"}, cast_to=object)
    assert created["result"]["value"]["origin-ip"] == "192.0.2.1"  # type: ignore[index]
    with pytest.raises(cloudflare.BadRequestError) as exc:
        client.post(prefix, body={"ip": "192.0.2.1", "vendor": "aws", "region": "us-east-1"}, cast_to=object)
    assert error_code(exc.value) == 1145
    edited = client.patch(prefix, body={"ip": "192.0.2.2", "vendor": "gcp", "region": "us-east1"}, cast_to=object)
    assert [m["origin-ip"] for m in edited["result"]["value"]] == ["192.0.2.1", "192.0.2.2"]  # type: ignore[index]
    batch = client.patch(
        prefix + "/batch", body=[{"ip": "192.0.2.3", "vendor": "aws", "region": "us-west-2"}], cast_to=object
    )
    assert batch["result"]["value"]["succeeded"][0]["origin-ip"] == "192.0.2.3"  # type: ignore[index]
    # Shared store: the current family sees the older family's writes.
    assert len(list(client.cache.origin_cloud_regions.list(zone_id=ZONE))) == 3
