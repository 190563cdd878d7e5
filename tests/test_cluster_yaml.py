"""cluster.yaml: valid for Ray's cluster launcher, and locked down (SSH only from outside, token auth everywhere)."""

import ipaddress
import json
import os
import re

import pytest
import yaml

from conftest import ROOT

CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def cfg():
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_schema():
    import ray

    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        return json.load(f)


def test_valid_against_the_cluster_config_schema_shipped_with_ray(cfg):
    import jsonschema

    schema = ray_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(cfg)


def test_ray_fills_and_accepts_it(cfg):
    """What `ray up` does before touching AWS: merge the provider defaults, validate again."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    full = prepare_config(cfg)
    validate_config(full)
    assert full["provider"]["type"] == "aws"
    assert full["head_node_type"] == "head" and "gpu_worker" in full["available_node_types"]


def test_head_and_gpu_worker_types_with_autoscaling_bounds(cfg):
    types = cfg["available_node_types"]
    assert set(types) == {"head", "gpu_worker"} and cfg["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}  # the head drives, it does not train
    gpu = types["gpu_worker"]
    assert re.match(r"^(g5|g6|p4d|p5)\.", gpu["node_config"]["InstanceType"])
    assert 0 <= gpu["min_workers"] <= gpu["max_workers"] <= cfg["max_workers"]
    assert cfg["idle_timeout_minutes"] > 0


def _cidrs(obj):
    """Every CIDR-looking string anywhere in the config."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _cidrs(k)
            yield from _cidrs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _cidrs(v)
    elif isinstance(obj, str):
        yield from re.findall(r"[0-9a-fA-F:.]+/\d{1,3}", obj)


def test_no_ingress_from_the_internet(cfg):
    # Ray's auto-created security group always adds SSH from 0.0.0.0/0 (provider.security_group can only add
    # rules to it), so every node type must name its own pre-made group, and the file must not add rules
    for name, t in cfg["available_node_types"].items():
        groups = t["node_config"].get("SecurityGroupIds")
        assert groups and all(g.startswith("sg-") for g in groups), name
    assert "security_group" not in cfg["provider"]
    for cidr in _cidrs(cfg):
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        assert net.prefixlen > 0, f"{cidr} opens to the whole internet"


def test_dashboard_and_mlflow_bound_to_localhost(cfg):
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head and "--allow-insecure-public" not in head
    mlflow = [c for c in cfg["head_start_ray_commands"] if "tracking_server" in c]
    assert mlflow and "--host 127.0.0.1" in mlflow[0]


def test_token_authentication_on_every_node(cfg):
    mounts = cfg["file_mounts"]
    assert any(remote.endswith("/.ray/auth_token") and local.endswith(".ray/auth_token")
               for remote, local in mounts.items())  # the same token on the head and every worker
    setup = "\n".join(cfg["setup_commands"])
    assert "chmod 600 ~/.ray/auth_token" in setup
    assert "export RAY_AUTH_MODE=token" in setup  # ray exec / submit / job entrypoints
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key]
              if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert "RAY_AUTH_MODE=disabled" not in CLUSTER_YAML.read_text()


def test_setup_installs_gist_ray_and_pins_ray(cfg):
    import ray

    setup = "\n".join(cfg["setup_commands"])
    assert re.search(r"pip install .*gist.ray", setup)
    assert f"ray[default,train,tune]=={ray.__version__}" in setup  # the nodes run the Ray this was tested with


def test_shared_storage_options_are_documented():
    text = CLUSTER_YAML.read_text()
    assert "output_dir: s3://" in text and "mount -t nfs4" in text and "efs" in text.lower()
