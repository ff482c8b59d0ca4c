"""The HTTP service: the /v1 API over any store, served by uvicorn (``threadkeep serve``).

This package is the only place that imports fastapi and uvicorn; ``threadkeep`` itself never
imports it.
"""
