"""nsp-recall serving: the online half (HTTP API, session store, bundle runtime). No torch here.

Entry points: ``service.app.create_app`` (the ASGI app) and ``service.server.serve`` (uvicorn);
``python -m service`` serves with settings from the environment.
"""
