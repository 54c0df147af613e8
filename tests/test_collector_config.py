"""Every shipped collector config is structurally sound and points at the gateway's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from crackle_otel.gateway.defaults import DEFAULT_GRPC_PORT

CONFIG_DIR = Path(__file__).resolve().parent.parent / "collector_config"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SECTIONS = {"receivers": "receivers", "processors": "processors", "exporters": "exporters"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_three_documented_topologies_ship():
    assert {p.name for p in CONFIGS} >= {"inline.yaml", "side_branch.yaml", "load_balancing.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_pipeline_component_is_defined_and_every_defined_one_is_used(path):
    config = _load(path)
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipelines"
    used = {section: set() for section in SECTIONS}
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}, name
        assert pipeline.get("receivers") and pipeline.get("exporters"), f"{name} needs receivers and exporters"
        for section in SECTIONS:
            for component in pipeline.get(section, []):
                assert component in (config.get(section) or {}), f"{name}: {component} is not defined in {section}"
                used[section].add(component)
    for section in SECTIONS:
        unused = set(config.get(section) or {}) - used[section]
        assert not unused, f"{section} defined but never used: {unused}"


def _crackle_endpoints(config: dict) -> list[str]:
    endpoints = []
    for name, exporter in config["exporters"].items():
        if "crackle" not in name:
            continue
        if "endpoint" in exporter:
            endpoints.append(exporter["endpoint"])
        for hostname in exporter.get("resolver", {}).get("static", {}).get("hostnames", []):
            endpoints.append(hostname)
    return endpoints


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_gateway_endpoints_use_the_gateway_default_grpc_port(path):
    endpoints = _crackle_endpoints(_load(path))
    assert endpoints, "config does not send anything to a crackle gateway"
    for endpoint in endpoints:
        assert endpoint.rsplit(":", 1)[1] == str(DEFAULT_GRPC_PORT), endpoint


def test_load_balancing_routes_by_service_over_several_gateways():
    exporter = _load(CONFIG_DIR / "load_balancing.yaml")["exporters"]["load_balancing/crackle"]
    assert exporter["routing_key"] == "service"
    assert len(exporter["resolver"]["static"]["hostnames"]) >= 2


def test_side_branch_keeps_the_backend_on_the_main_path():
    pipelines = _load(CONFIG_DIR / "side_branch.yaml")["service"]["pipelines"]
    assert "otlp_grpc/backend" in pipelines["traces"]["exporters"]
    assert "otlp_grpc/crackle" in pipelines["traces"]["exporters"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_exports_to_a_gateway_carry_its_bearer_token(path):
    """The gateways listen on 0.0.0.0 in these topologies, so they run with --auth-token-file."""
    for name, exporter in _load(path)["exporters"].items():
        if "crackle" not in name:
            continue
        settings = exporter.get("protocol", {}).get("otlp", exporter)
        assert settings.get("headers", {}).get("authorization") == "Bearer ${env:CRACKLE_GATEWAY_TOKEN}", name
        text = path.read_text()
        assert "--auth-token-file" in text
