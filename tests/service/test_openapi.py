"""The OpenAPI document: every route of the design, with examples; schemathesis fuzzes it all."""

from __future__ import annotations

import re

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from tests.service._service_helpers import client_for
from threadkeep.service.app import create_app
from threadkeep.service.settings import ServiceSettings

DESIGN_ROUTES = {
    ("post", "/v1/chat"),
    ("post", "/v1/conversations"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{conversation_id}"),
    ("delete", "/v1/conversations/{conversation_id}"),
    ("post", "/v1/conversations/{conversation_id}/messages"),
    ("get", "/v1/conversations/{conversation_id}/messages"),
    ("get", "/v1/conversations/{conversation_id}/state"),
    ("put", "/v1/conversations/{conversation_id}/state"),
    ("post", "/v1/conversations/{conversation_id}/status"),
    ("get", "/v1/events"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
}

KEY = "fuzz-key"
EXAMPLES = 25
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


def test_openapi_documents_every_route_with_examples():
    with client_for("memory://") as api:
        doc = api.get("/openapi.json").json()
    routes = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes >= DESIGN_ROUTES
    schemas = doc["components"]["schemas"]
    for name in ("ChatOut", "ConversationOut", "MessageOut", "StateOut", "ErrorOut"):
        assert schemas[name].get("examples"), name
    chat = doc["paths"]["/v1/chat"]["post"]
    assert {"200", "404", "409", "413", "422", "503"} <= set(chat["responses"])
    put_state = doc["paths"]["/v1/conversations/{conversation_id}/state"]["put"]
    assert "412" in put_state["responses"]
    assert "ETag" in put_state["responses"]["200"]["headers"]
    assert "410" in doc["paths"]["/v1/events"]["get"]["responses"]
    assert "text/event-stream" in doc["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]


def test_fuzz_every_operation(tmp_path):
    """Bounded schemathesis run over every operation; fails on any 5xx or schema violation."""
    db = tmp_path / "fuzz.db"
    settings_ = ServiceSettings(store=f"sqlite:///{db}", bot="seller", api_keys=f"fuzz:{KEY}")
    app = create_app(settings_)
    with TestClient(app):  # runs the lifespan: the store stays open for the whole run
        loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
        # the events stream never ends by itself; its backlog mode is tested in test_api
        schema = loaded.exclude(path="/v1/events")
        failures: list[str] = []
        tried = 0
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # an Err raises here: a failure

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=CHECKS)

            try:
                run()
            except Exception as exc:  # collect every operation's failure, then report all
                failures.append(f"{operation.label}: {exc}")
            tried += 1
    assert tried >= len(DESIGN_ROUTES) - 1
    assert not failures, "\n\n".join(failures)


def test_docs_need_no_internet(api):
    """Swagger UI and ReDoc come from files the package ships, never from a CDN."""
    for page in ("/docs", "/redoc"):
        html = api.get(page)
        assert html.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert sources, html.text
        assert all(s.startswith("/") and not s.startswith("//") for s in sources), sources
        for source in sources:
            asset = api.get(source)
            assert asset.status_code == 200, source
            assert len(asset.content) > 1000, source
