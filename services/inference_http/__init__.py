"""The generic HTTP inference service: MinIO object -> decode -> dynamic batch -> the team's torch runner.

Start it with `python -m services.inference_http` (uvicorn with the server limits of server.py); it is
configured from the environment (see settings.py).
"""
