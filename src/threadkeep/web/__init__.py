"""The browser front end: web chat at ``/``, dashboard at ``/dashboard`` and ``/widget.js``.

Include ``threadkeep.web.routes.router`` in the service's FastAPI app; the pages use the
``/v1`` API and its ``/v1/events`` stream, so they need nothing else.
"""
