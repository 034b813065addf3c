"""Property-based tests of the whole API from its own OpenAPI document (schemathesis), run
in-process against the real app, Kafka (Tansu) and Redis with an admin key: no answer is a
server error (an index is served, so no 503 is expected), and every status, content type,
header and body is one the document declares.

The number of examples per operation is bounded (MAX_EXAMPLES) to keep the run short;
`MODX_SCHEMATHESIS_EXAMPLES` raises it for a longer hunt.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from service.app import create_app
from service.indexer_worker import IndexerWorker
from service.registry import Registry
from service.trainer_worker import bootstrap
from tests.helpers import bearer, make_key, private_settings, wait_for, write_phases
from trainer.datasets.synthetic import SyntheticDataset

MAX_EXAMPLES = int(os.environ.get("MODX_SCHEMATHESIS_EXAMPLES", "50"))
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def api(tmp_path_factory, kafka, redis_server):
    s = private_settings(
        tmp_path_factory.mktemp("schemathesis"),
        kafka,
        redis_server,
        "st",
        seal_wait_s=0,
        key_rate=100_000.0,
        serving_poll_s=0.05,
    )
    write_phases(s, SyntheticDataset(n_domains=2, pairs_per_domain=10, seed=4), n=2)
    registry = Registry.from_url(s.redis_url)
    bootstrap(s, registry)  # snapshot 0 and its index over both phases: search answers 200
    IndexerWorker(s, registry).tick()
    app = create_app(s)
    with TestClient(app) as client:  # runs the lifespan (the serving poller) for schemathesis' calls too
        wait_for(lambda: client.get("/readyz").status_code == 200, message="the index served")
        yield app, bearer(make_key(s, "admin", rate=100_000.0))


def run_operation(operation, mode: GenerationMode, headers: dict) -> int:
    """MAX_EXAMPLES generated cases of one operation, each sent and validated; how many ran."""
    ran = []

    @given(operation.as_strategy(generation_mode=mode, headers=headers))
    @hypothesis_settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        ran.append(1)
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to generate (e.g. no parameter to break in negative mode)
        pass
    return len(ran)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_conforms_to_its_openapi_document(api, mode):
    app, headers = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    counts = {op.label: run_operation(op, mode, headers) for op in operations}
    print(f"schemathesis {mode.value}: {sum(counts.values())} cases over {len(counts)} operations")
    assert sum(counts.values()) >= (5 * len(counts) if mode == GenerationMode.POSITIVE else 30)
