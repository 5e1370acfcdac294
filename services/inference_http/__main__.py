"""`python -m services.inference_http`: the service on HOST:PORT (default 0.0.0.0:8000), configured from the
environment, under uvicorn with the server limits of server.py."""

from services.inference_http.server import main

if __name__ == "__main__":
    main()
