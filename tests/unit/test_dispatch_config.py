"""The dispatcher's settings: flags, variables, their defaults and the values refused at start
(streaming/dispatch/config.py)."""

from __future__ import annotations

import pytest

from streaming.dispatch.config import parse_args


def test_config_from_seed_args_and_environment():
    cfg = parse_args(
        ["--team", "fruit", "--parallelism", "3"], env={"HTTP_URL": "http://svc:8000/infer_json", "ATTEMPTS": "7"}
    )
    assert (cfg.input_topic, cfg.output_topic, cfg.dlq_topic) == (
        "imagery.new.fruit",
        "inference.results.fruit",
        "dlq.inference.http",
    )
    assert (cfg.group_id, cfg.parallelism, cfg.attempts, cfg.http_url) == (
        "http-dispatcher-fruit",
        3,
        7,
        "http://svc:8000/infer_json",
    )
    assert cfg.connector_jars == ()
    assert parse_args(["--team", "x", "--connector-jars", ""], env={}).connector_jars == ()
    with pytest.raises(SystemExit):
        parse_args([], env={})
    with pytest.raises(SystemExit):
        parse_args(["--team", "x", "--delivery-guarantee", "maybe"], env={})


def test_each_job_identity_has_its_own_transactional_id_prefix_stable_across_restarts():
    base = ["--team", "fruit", "--delivery-guarantee", "exactly-once"]
    prod = parse_args(base, env={})
    assert prod.transactional_id_prefix("results") == parse_args(base, env={}).transactional_id_prefix("results")
    assert prod.transactional_id_prefix("results") != prod.transactional_id_prefix("dlq")
    assert prod.transactional_id_prefix("results").startswith("imagery-http-dispatcher-fruit-")
    # a canary or a staging job of the same team (same job name): another group, or other topics
    others = [
        parse_args([*base, *more], env={})
        for more in (
            ["--group-id", "canary"],
            ["--output-topic", "staging.results"],
            ["--input-topic", "staging.in"],
            ["--dlq-topic", "staging.dlq"],
        )
    ]
    prefixes = {cfg.transactional_id_prefix("results") for cfg in [prod, *others]}
    assert len(prefixes) == 1 + len(others)


def test_every_setting_is_one_field_with_its_own_flag_and_variable():
    from streaming.dispatch.config import DispatcherConfig, variable

    names = [variable(name) for name in DispatcherConfig.model_fields]
    assert len(names) == len(set(names)) and all(f.description for f in DispatcherConfig.model_fields.values())
    env = {
        "TEAM": "fruit",
        "GROUP_SIZE": "8",
        "MAX_BATCH_WAIT_MS": "2.5",
        "CONNECTOR_JARS": "a.jar,b.jar",
        "IMAGERY_DETACHED": "1",
        "DELIVERY_GUARANTEE": "exactly-once",
        "AUTH_TOKEN": "",
    }
    cfg = parse_args([], env=env)
    assert (
        cfg.group_size,
        cfg.max_batch_wait_ms,
        cfg.connector_jars,
        cfg.detached,
        cfg.delivery_guarantee,
        cfg.auth_token,
    ) == (8, 2.5, ("a.jar", "b.jar"), True, "exactly-once", None)
    assert parse_args(["--group-size", "4"], env=env).group_size == 4  # a flag wins over the variable
    assert not parse_args(["--team", "x"], env={}).detached


def test_settings_that_cannot_work_are_refused_at_start():
    with pytest.raises(SystemExit):  # a transaction open longer than the broker allows
        parse_args(
            ["--team", "x", "--delivery-guarantee", "exactly-once", "--checkpoint-interval-ms", "600000"], env={}
        )
    with pytest.raises(SystemExit):  # results and dead letters of such messages would not fit a record
        parse_args(["--team", "x", "--max-message-bytes", "400000"], env={})
    cfg = parse_args(["--team", "x", "--checkpoint-dir", "/var/ckpt"], env={})
    assert (cfg.checkpoint_dir, cfg.resume) == ("file:///var/ckpt", "latest")


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (
            ["--attempt-timeout-s", "-1"],
            {},
            "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) '-1': Input should be greater than 0",
        ),
        ([], {"ATTEMPT_TIMEOUT_S": "0"}, "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) '0'"),
        ([], {"REQUEST_TIMEOUT_S": "soon"}, "--attempt-timeout-s (ATTEMPT_TIMEOUT_S) 'soon'"),
        (
            ["--starting-offsets", "newest"],
            {},
            "--starting-offsets (STARTING_OFFSETS) 'newest': Input should be 'group'",
        ),
        (["--restart-strategy", "always"], {}, "--restart-strategy (RESTART_STRATEGY) 'always'"),
        (["--capacity", "0"], {}, "--capacity (CAPACITY) '0'"),
        (["--backoff-ms", "-5"], {}, "--backoff-ms (BACKOFF_MS) '-5'"),
        (["--http-url", "svc:8000/infer_json"], {}, "--http-url (HTTP_URL) 'svc:8000/infer_json': must be an http"),
        ([], {"IMAGERY_DETACHED": "perhaps"}, "--detached (IMAGERY_DETACHED) 'perhaps'"),
        (["--prometheus-port", "high"], {}, "--prometheus-port (PROMETHEUS_PORT) 'high'"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_its_flag_and_variable(argv, env, named, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(["--team", "x", *argv], env=env)
    assert exited.value.code == 2 and named in capsys.readouterr().err


def test_the_attempt_timeout_s_former_names_are_still_read_and_the_settings_travel_to_the_workers():
    import pickle

    assert parse_args(["--team", "x", "--request-timeout-s", "3"], env={}).attempt_timeout_s == 3.0
    assert parse_args(["--team", "x"], env={"REQUEST_TIMEOUT_S": "4"}).attempt_timeout_s == 4.0
    assert parse_args(["--team", "x"], env={"REQUEST_TIMEOUT_S": "4", "ATTEMPT_TIMEOUT_S": "5"}).attempt_timeout_s == 5
    cfg = parse_args(["--team", "x", "--attempt-timeout-s", "6"], env={"ATTEMPT_TIMEOUT_S": "5"})
    assert cfg.attempt_timeout_s == 6.0 and pickle.loads(pickle.dumps(cfg)) == cfg  # pickled to PyFlink's workers
