"""The service's settings: which buckets a team's service may read."""

from __future__ import annotations

import pytest

from services.inference_http.settings import ServiceSettings, checked_service_environment, service_environment


def test_by_default_a_team_reads_its_own_buckets_only():
    settings = ServiceSettings(team="fruit")
    assert settings.bucket_allowed("fruit") and settings.bucket_allowed("fruit-hot")
    assert not settings.bucket_allowed("fruitcake") and not settings.bucket_allowed("orchard-fruit-hot")


def test_a_team_name_with_an_underscore_owns_the_buckets_spelled_with_a_dash():
    assert ServiceSettings(team="cold_chain").bucket_allowed("cold-chain-cam1")


def test_allowed_buckets_replaces_the_default_with_names_and_globs():
    settings = ServiceSettings(team="fruit", allowed_buckets="imagery-hot, shared-*")
    assert settings.bucket_allowed("imagery-hot") and settings.bucket_allowed("shared-2026")
    assert not settings.bucket_allowed("fruit-hot")
    assert ServiceSettings(team="fruit", allowed_buckets="*").bucket_allowed("anything-at-all")


def test_bucket_answers_are_the_same_when_asked_again():
    settings = ServiceSettings(team="fruit")
    assert [settings.bucket_allowed(b) for b in ("fruit-a", "orchard", "fruit-a", "orchard")] == [True, False] * 2


def test_workers_are_set_or_default_to_one_on_the_cpu():
    assert ServiceSettings(team="fruit", workers=3).worker_count == 3
    assert ServiceSettings(team="fruit", device="cpu").worker_count == 1  # torch's threads take every core


def test_with_a_gpu_the_default_is_half_the_cores_up_to_eight(monkeypatch):
    from services.inference_http import settings as module

    monkeypatch.setattr(module, "gpu_present", lambda: True)
    for cores, workers in ((2, 1), (4, 2), (16, 8), (64, 8)):
        monkeypatch.setattr(module, "usable_cores", lambda cores=cores: cores)
        assert ServiceSettings(team="fruit").worker_count == workers
    assert ServiceSettings(team="fruit", device="cpu").worker_count == 1


def test_the_environment_from_field_names_is_what_the_settings_read(monkeypatch):
    env = service_environment(
        team="fruit",
        max_batch_size=16,
        max_batch_delay_ms=2.5,
        minio_secure=False,
        access_log=True,
        auth_token="t0k3n",
        weights_path=None,
    )
    assert env == {
        "TEAM": "fruit",
        "MAX_BATCH_SIZE": "16",
        "MAX_BATCH_DELAY_MS": "2.5",
        "MINIO_SECURE": "0",
        "ACCESS_LOG": "1",
        "AUTH_TOKEN": "t0k3n",
    }  # None: no variable, the default holds
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ServiceSettings()
    assert (settings.team, settings.max_batch_size, settings.max_batch_delay_ms) == ("fruit", 16, 2.5)
    assert not settings.minio_secure and settings.access_log and settings.auth_token is not None
    assert settings.auth_token.get_secret_value() == "t0k3n"


def test_a_misspelt_setting_raises_instead_of_being_ignored():
    with pytest.raises(ValueError, match=r"max_bach_size \(did you mean max_batch_size\?\)"):
        service_environment(team="fruit", max_bach_size=16)
    with pytest.raises(ValueError, match=r"WORKER \(did you mean WORKERS\?\)"):
        checked_service_environment({"MAX_BATCH_SIZE": "64", "WORKER": "8"})
    assert checked_service_environment({"MAX_BATCH_SIZE": "64", "workers": "8"}) == {
        "MAX_BATCH_SIZE": "64",
        "WORKERS": "8",
    }
