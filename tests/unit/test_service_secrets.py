"""The service's secrets and TLS settings: secrets from files (`*_FILE`), the warning for a secret given as itself,
and the settings that refuse to start, each saying what is wrong without ever showing a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from imagery.process import free_port
from imagery.repo import REPO_ROOT
from services.inference_http.settings import ServiceSettings, settings_error

SECRET = "s3cr3t-value-never-shown"
VARIABLES = (
    "AUTH_TOKEN",
    "AUTH_TOKEN_FILE",
    "MINIO_SECRET_KEY",
    "MINIO_SECRET_KEY_FILE",
    "MINIO_SECURE",
    "MINIO_CA_FILE",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def secret_file(tmp_path: Path, text: str = SECRET + "\n", name: str = "secret") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def refusal(**env: str) -> str:
    """The message ServiceSettings refuses ENV with (set as the process's variables)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with pytest.raises(ValidationError) as caught:
            ServiceSettings()
    assert SECRET not in str(caught.value)  # pydantic's own text too: inputs are hidden
    message = settings_error(caught.value)
    assert SECRET not in message
    return message


def test_secrets_come_from_files_less_the_trailing_newline(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTH_TOKEN_FILE", str(secret_file(tmp_path, "tok en\n", "token")))
    monkeypatch.setenv("MINIO_SECRET_KEY_FILE", str(secret_file(tmp_path, SECRET + "\r\n", "minio")))
    settings = ServiceSettings()
    assert settings.auth_token is not None and settings.auth_token.get_secret_value() == "tok en"
    assert settings.minio_secret_key.get_secret_value() == SECRET
    assert settings.secret_warnings() == []  # the recommended form: nothing to warn about
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())


def test_the_plain_demo_keeps_its_default_minio_secret_and_no_warning():
    settings = ServiceSettings()
    assert settings.minio_secret_key.get_secret_value() == "minioadmin"
    assert settings.auth_token is None and settings.secret_warnings() == []


def test_a_secret_in_the_environment_still_works_with_one_warning_per_variable_that_hides_it(monkeypatch):
    monkeypatch.setenv("AUTH_TOKEN", SECRET)
    monkeypatch.setenv("MINIO_SECRET_KEY", SECRET + "-minio")
    settings = ServiceSettings()
    assert settings.auth_token is not None and settings.auth_token.get_secret_value() == SECRET
    token_warning, minio_warning = settings.secret_warnings()
    for warning, name in ((token_warning, "AUTH_TOKEN"), (minio_warning, "MINIO_SECRET_KEY")):
        assert warning.startswith(f"{name} is set in the process environment")
        assert "/proc/<pid>/environ" in warning and "docker inspect" in warning and "pod spec" in warning
        assert f"set {name}_FILE to its path" in warning
        assert SECRET not in warning


def test_a_secret_given_both_ways_is_refused_naming_both(tmp_path):
    message = refusal(AUTH_TOKEN=SECRET, AUTH_TOKEN_FILE=str(secret_file(tmp_path)))
    assert "AUTH_TOKEN and AUTH_TOKEN_FILE are both set" in message
    message = refusal(MINIO_SECRET_KEY=SECRET, MINIO_SECRET_KEY_FILE=str(secret_file(tmp_path)))
    assert "MINIO_SECRET_KEY and MINIO_SECRET_KEY_FILE are both set" in message


def test_an_empty_variable_is_not_a_second_source(tmp_path, monkeypatch):
    """A launcher clears an inherited secret with AUTH_TOKEN= (as InferenceService does): the file holds."""
    monkeypatch.setenv("AUTH_TOKEN", "")
    monkeypatch.setenv("MINIO_SECRET_KEY", "")
    monkeypatch.setenv("AUTH_TOKEN_FILE", str(secret_file(tmp_path)))
    settings = ServiceSettings()
    assert settings.auth_token is not None and settings.auth_token.get_secret_value() == SECRET
    assert settings.minio_secret_key.get_secret_value() == "minioadmin" and settings.secret_warnings() == []


def test_a_missing_unreadable_or_empty_file_is_refused_naming_the_variable_and_path(tmp_path):
    missing = tmp_path / "no-such-file"
    assert (
        refusal(AUTH_TOKEN_FILE=str(missing)) == f"AUTH_TOKEN_FILE={missing}: cannot read it (No such file or "
        "directory)"
    )
    assert refusal(MINIO_SECRET_KEY_FILE=str(tmp_path)).startswith(f"MINIO_SECRET_KEY_FILE={tmp_path}: cannot read")
    empty = secret_file(tmp_path, "\n", "empty")
    assert refusal(AUTH_TOKEN_FILE=str(empty)) == f"AUTH_TOKEN_FILE={empty}: the file is empty"
    if os.geteuid() != 0:  # root reads a file whatever its mode
        unreadable = secret_file(tmp_path, name="unreadable")
        unreadable.chmod(0)
        assert "cannot read it (Permission denied)" in refusal(AUTH_TOKEN_FILE=str(unreadable))


def test_tls_needs_both_the_certificate_and_its_key(tmp_path):
    cert = secret_file(tmp_path, "not checked here", "cert.pem")
    assert refusal(TLS_CERT_FILE=str(cert)).startswith("TLS_CERT_FILE is set without TLS_KEY_FILE")
    assert refusal(TLS_KEY_FILE=str(cert)).startswith("TLS_KEY_FILE is set without TLS_CERT_FILE")
    assert "TLS_KEY_FILE=" in refusal(TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(tmp_path / "gone.key"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLS_CERT_FILE", str(cert))
        patch.setenv("TLS_KEY_FILE", str(cert))
        assert ServiceSettings().tls


def test_minio_ca_file_must_be_pem_and_needs_minio_secure(tmp_path):
    ca = secret_file(tmp_path, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "ca.crt")
    assert refusal(MINIO_CA_FILE=str(ca)).startswith("MINIO_CA_FILE is set but MINIO_SECURE is off")
    assert refusal(MINIO_CA_FILE=str(tmp_path / "gone.crt"), MINIO_SECURE="1").startswith("MINIO_CA_FILE=")
    not_pem = secret_file(tmp_path, "hello", "not.pem")
    assert refusal(MINIO_CA_FILE=str(not_pem), MINIO_SECURE="1") == f"MINIO_CA_FILE={not_pem}: no PEM certificate in it"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINIO_CA_FILE", str(ca))
        patch.setenv("MINIO_SECURE", "1")
        assert ServiceSettings().minio_ca_file == ca


def test_uvicorn_serves_https_with_the_files_given(tmp_path, monkeypatch):
    from services.inference_http.server import uvicorn_config

    cert, key = secret_file(tmp_path, "c", "cert.pem"), secret_file(tmp_path, "k", "key.pem")
    config = uvicorn_config(ServiceSettings(tls_cert_file=cert, tls_key_file=key, workers=3))
    assert (config.ssl_certfile, config.ssl_keyfile, config.workers) == (str(cert), str(key), 3)
    plain = uvicorn_config(ServiceSettings())
    assert plain.ssl_certfile is None and plain.ssl_keyfile is None


# ---------------------------------------------------------------------------- the process itself


def run_service(env: dict[str, str], timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m services.inference_http` with ENV over a clean copy of this environment; it must exit."""
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "services.inference_http"],
        env={**base, "PORT": str(free_port()), **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_the_service_refuses_to_start_saying_why_without_the_secret(tmp_path):
    both = run_service({"AUTH_TOKEN": SECRET, "AUTH_TOKEN_FILE": str(secret_file(tmp_path))})
    assert both.returncode != 0
    assert "refusing to start: AUTH_TOKEN and AUTH_TOKEN_FILE are both set" in both.stderr
    assert SECRET not in both.stdout + both.stderr and "Traceback" not in both.stderr
    missing = run_service({"MINIO_SECRET_KEY_FILE": str(tmp_path / "nowhere")})
    assert missing.returncode != 0
    assert f"refusing to start: MINIO_SECRET_KEY_FILE={tmp_path / 'nowhere'}: cannot read it" in missing.stderr
    mismatched = run_service(
        {
            "TLS_CERT_FILE": str(secret_file(tmp_path, "junk", "c.pem")),
            "TLS_KEY_FILE": str(secret_file(tmp_path, "junk", "k.pem")),
        }
    )
    assert mismatched.returncode != 0 and "are not a certificate and its key" in mismatched.stderr


def test_the_service_warns_once_per_secret_in_its_environment_and_never_shows_it():
    """An unknown team stops the service after its start-up: far enough to see every warning it logs."""
    done = run_service({"AUTH_TOKEN": SECRET, "TEAM": "no-such-team-here", "WORKERS": "1"})
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "no-such-team-here" in output
    assert output.count("AUTH_TOKEN is set in the process environment") == 1, output[-3000:]
    assert "WARNING" in output.split("AUTH_TOKEN is set")[0].splitlines()[-1]
    assert "MINIO_SECRET_KEY is set" not in output  # the default, not given: nothing to warn about
    assert SECRET not in output


# ---------------------------------------------------------------------------- the launcher (nothing started)


def test_the_launcher_hands_secrets_as_files_only(tmp_path):
    """InferenceService's variables for the process: secrets by file (written at start), never as themselves; one
    given in ENV as itself is taken into a file too; an inherited one is cleared."""
    from imagery.local.certs import CertFiles
    from imagery.local.inference_service import InferenceService
    from imagery.local.settings import StackSettings

    stack = StackSettings(state_dir=tmp_path, minio_secret_key=SECRET)
    tls = CertFiles(tmp_path / "c.crt", tmp_path / "c.key", tmp_path / "c.pem")
    service = InferenceService(
        stack,
        env={"AUTH_TOKEN": SECRET + "-token", "MAX_BATCH_SIZE": "4"},
        tls=tls,
        minio_secure=True,
        minio_ca_file=tmp_path / "ca.crt",
    )
    assert service.secrets == {"minio_secret_key": SECRET, "auth_token": SECRET + "-token"}
    env = service.environment({"AUTH_TOKEN_FILE": "/private/auth_token"})
    assert SECRET not in str(env) and SECRET not in str(service.command())
    assert (env["AUTH_TOKEN"], env["MINIO_SECRET_KEY"], env["AUTH_TOKEN_FILE"]) == ("", "", "/private/auth_token")
    assert (env["TLS_CERT_FILE"], env["TLS_KEY_FILE"]) == (str(tls.cert), str(tls.key))
    assert (env["MINIO_SECURE"], env["MINIO_CA_FILE"], env["MAX_BATCH_SIZE"]) == ("1", str(tmp_path / "ca.crt"), "4")
    assert service.base_url.startswith("https://")
    with pytest.raises(ValueError, match="given twice"):
        InferenceService(stack, env={"AUTH_TOKEN": "a"}, auth_token="b")
    # a secret file of the caller's own is the caller's: nothing written for it
    theirs = InferenceService(stack, env={"MINIO_SECRET_KEY_FILE": "/run/secrets/minio"})
    assert theirs.secrets == {} and theirs.environment()["MINIO_SECRET_KEY_FILE"] == "/run/secrets/minio"
