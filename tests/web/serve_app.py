"""Run the service with the web routes on 127.0.0.1:PORT (the browser tests start this).

Usage: python serve_app.py PORT. The store URL comes from THREADKEEP_STORE. The app factory
is ``threadkeep.service.app:create_app`` unless THREADKEEP_WEB_TEST_APP names another
``module:factory``.
"""

from __future__ import annotations

import importlib
import os
import sys

import uvicorn
from fastapi import FastAPI

from threadkeep.web.routes import router


def build() -> FastAPI:
    spec = os.environ.get("THREADKEEP_WEB_TEST_APP", "threadkeep.service.app:create_app")
    module, _, name = spec.partition(":")
    app: FastAPI = getattr(importlib.import_module(module), name)()
    if not any(getattr(r, "path", None) == "/dashboard" for r in app.router.routes):
        # Put the web routes first, so they win over any placeholder "/" of the service.
        before = len(app.router.routes)
        app.include_router(router)
        added = app.router.routes[before:]
        del app.router.routes[before:]
        app.router.routes[0:0] = added
    return app


if __name__ == "__main__":
    uvicorn.run(build(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
