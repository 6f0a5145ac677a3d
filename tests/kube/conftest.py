"""Fixtures: the stand-in API server (``apiserver.py``) and a backend whose client talks to it."""

from __future__ import annotations

import pytest
from kubernetes import client

from services.kube.backend import KubernetesBackend
from services.kube.manifests import PolicyServerConfig
from tests.kube.apiserver import FakeApiServer

NAMESPACE = "flywheel"


@pytest.fixture
def apiserver():
    server = FakeApiServer(namespaces=(NAMESPACE,)).start()
    yield server
    server.stop()


@pytest.fixture
def api_client(apiserver) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = apiserver.url
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def backend(api_client) -> KubernetesBackend:
    return KubernetesBackend(
        api_client,
        namespace=NAMESPACE,
        policy_server=PolicyServerConfig(image="registry.example/flywheel-policy-server:1.0"),
    )
