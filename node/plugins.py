"""The parts of a full node that :func:`node.app.create_app` leaves out.

``create_app`` serves one log and its queries; replication, witnessing and the
provenance endpoints (bundles, lineage) plug in through its hooks. Every way of running a
node (``turtles node start``, ``python -m node.server``, the cluster's children) passes
:func:`full_node` so they all serve the same API.
"""

from __future__ import annotations

from typing import Any

from node.replication import replication_ctx
from node.routes.provenance import OPENAPI_PATHS as PROVENANCE_OPENAPI
from node.routes.provenance import routes as provenance_routes
from node.routes.witness import OPENAPI_PATHS as WITNESS_OPENAPI
from node.routes.witness import witness_routes
from node.witness import witness_ctx


def full_node() -> dict[str, Any]:
    """Keyword arguments for :func:`node.app.create_app` / :func:`node.server.run`."""
    return {
        "extra_cleanup_ctx": (witness_ctx, replication_ctx),
        "extra_routes": (witness_routes, provenance_routes),
        "extra_openapi_paths": {**WITNESS_OPENAPI, **PROVENANCE_OPENAPI},
    }


__all__ = ["full_node"]
