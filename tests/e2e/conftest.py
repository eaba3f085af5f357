"""The scenarios drive a running cluster (scripts/cluster up); each test gets a namespace of its own."""

from __future__ import annotations

import re
import secrets
from typing import Iterator

import pytest

from tests.e2e.kube import Kube, KubectlFailed, in_cluster


@pytest.fixture(scope="session")
def cluster() -> Kube:
    if not in_cluster():
        pytest.fail(
            "tests/e2e drives the e2e cluster: run them through scripts/test, or by hand with "
            "scripts/cluster up && scripts/cluster exec -- .venv/bin/python -m pytest tests/e2e",
            pytrace=False,
        )
    admin = Kube("default")
    admin.kubectl("get", "--raw", "/readyz")
    return admin


@pytest.fixture
def kube(cluster: Kube, request: pytest.FixtureRequest) -> Iterator[Kube]:
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    namespace = f"{name}-{secrets.token_hex(2)}"
    cluster.kubectl("create", "namespace", namespace, namespaced=False)
    yield Kube(namespace)
    try:
        cluster.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=240s", namespaced=False,
                        timeout=270)
    except KubectlFailed as err:
        pytest.fail(f"the test's namespace {namespace} could not be deleted: {err}")
