"""The OpenAPI document is served and stays true to the routes and the request models."""

from __future__ import annotations

from handlers.openapi import REQUEST_BODIES
from handlers.openapi_parts import API
from tests.support import Harness


async def test_document_matches_routes_and_examples_validate(quorum: Harness) -> None:
    status, doc = await quorum.api("GET", f"{API}/openapi.json", key=None)
    assert status == 200
    assert doc["openapi"].startswith("3.")
    documented = {
        (path, method.upper())
        for path, ops in doc["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "patch", "delete")
    }
    app = quorum.app.make_web_app()
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(API)
        and route.method not in ("HEAD", "OPTIONS")
    }
    assert served == documented, (served - documented, documented - served)
    # Every $ref resolves.
    schemas = doc["components"]["schemas"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return out + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    # Request-body examples are accepted by the models the handlers validate with.
    for name, model in REQUEST_BODIES.items():
        examples = schemas[name].get("examples")
        assert examples, name
        for example in examples:
            model.model_validate(example)
    example = schemas["CreateApproval"]["examples"][0]
    status, created = await quorum.api("POST", f"{API}/approvals", example)
    assert status == 201, created
    for key in doc["components"]["schemas"]["Approval"]["required"]:
        assert key in created
