"""`python -m services.inference_http`: uvicorn on HOST:PORT (default 0.0.0.0:8000) from the environment."""

from __future__ import annotations

import uvicorn

from services.inference_http.settings import ServiceSettings


def main() -> None:
    settings = ServiceSettings()
    uvicorn.run("services.inference_http.app:app", host=settings.host, port=settings.port,
                log_level=settings.log_level)


if __name__ == "__main__":
    main()
