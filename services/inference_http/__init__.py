"""The generic HTTP inference service: MinIO object -> decode -> dynamic batch -> the team's torch runner.

Start it with `uvicorn services.inference_http.app:app` (or `python -m services.inference_http`); it is
configured from the environment (see settings.py).
"""
