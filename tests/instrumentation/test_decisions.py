"""What plldb changes on a function and how it is undone: pure decisions, checked without AWS.

The central property: whatever a function's configuration, stripping plldb's instrumentation gives back
exactly what was there before, from the instrumented configuration alone.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plldb import protocol
from plldb.instrumentation import decisions
from plldb.instrumentation.decisions import AliasTarget, CannotInstrument, Original, Target

REGION_ACCOUNT = "arn:aws:lambda:eu-west-1:123456789012"
PLLDB_LAYER = f"{REGION_ACCOUNT}:layer:plldb-debugger:7"
OLDER_PLLDB_LAYER = f"{REGION_ACCOUNT}:layer:plldb-debugger:3"
APP_LAYERS = [f"{REGION_ACCOUNT}:layer:app-layer-{i}:{i + 1}" for i in range(5)]
PUBLIC_LAYER = "arn:aws:lambda:eu-west-1:580247275435:layer:LambdaInsightsExtension:53"
OWN_WRAPPER = "/opt/observability/wrapper.sh"
SESSION = "9ada04b8-639d-476f-af6a-40c89714b812"
OTHER_SESSION = "1c8f8a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b"


def target(session_id: str = SESSION, **changes: Any) -> Target:
    values: dict[str, Any] = {
        "session_id": session_id,
        "dispatcher_arn": f"{REGION_ACCOUNT}:function:plldb-DispatcherFunction-AbC",
        "invocations_table": "plldb-PLLDBInvocations-XYZ",
        "payload_bucket": "plldb-payloadbucket-abc",
        "layer_version_arn": PLLDB_LAYER,
    }
    values.update(changes)
    return Target(**values)


def configuration(
    environment: dict[str, str] | None, layers: list[str], timeout: int, **fields: Any
) -> dict[str, Any]:
    """A GetFunctionConfiguration answer (Lambda omits Environment when a function has none)."""
    config: dict[str, Any] = {
        "FunctionName": "orders-create",
        "Runtime": "python3.12",
        "PackageType": "Zip",
        "Handler": "app.handler",
        "Timeout": timeout,
        "Layers": [{"Arn": arn, "CodeSize": 100} for arn in layers],
    }
    if environment is not None:
        config["Environment"] = {"Variables": dict(environment)}
    config.update(fields)
    return config


def applied(config: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The configuration Lambda reports after an UpdateFunctionConfiguration with ``update``."""
    result = dict(config)
    result["Environment"] = {"Variables": dict(update["Environment"]["Variables"])}
    result["Layers"] = [{"Arn": arn, "CodeSize": 100} for arn in update["Layers"]]
    result["Timeout"] = update["Timeout"]
    return result


variable_names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,20}", fullmatch=True).filter(
    lambda name: not name.startswith(("AWS_", "PLLDB_", "DEBUGGER_", "LAMBDA_", "_"))
)
variable_values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)


@st.composite
def originals(draw: Any) -> tuple[dict[str, str] | None, list[str], int]:
    environment = draw(st.one_of(st.none(), st.dictionaries(variable_names, variable_values, max_size=6)))
    if environment is not None and draw(st.booleans()):
        environment["AWS_LAMBDA_EXEC_WRAPPER"] = OWN_WRAPPER
    layers = draw(st.lists(st.sampled_from([*APP_LAYERS[:4], PUBLIC_LAYER]), unique=True, max_size=4))
    timeout = draw(st.integers(1, 900))
    return environment, layers, timeout


targets = st.builds(
    target,
    session_id=st.uuids(version=4).map(str),
    fallback=st.sampled_from(protocol.FALLBACK_MODES),
    timeout=st.integers(1, 900),
)


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(original=originals(), session=targets)
def test_stripping_an_instrumented_function_gives_back_exactly_what_was_deployed(original, session) -> None:
    environment, layers, timeout = original
    deployed = configuration(environment, layers, timeout)

    instrumented = applied(deployed, decisions.instrument_update(deployed, session))

    assert decisions.original_of(instrumented, PLLDB_LAYER) == Original(environment, layers, timeout)
    assert decisions.strip_update(instrumented, PLLDB_LAYER) == {
        "Environment": {"Variables": dict(environment or {})},
        "Layers": layers,
        "Timeout": timeout,
    }
    stripped = applied(instrumented, decisions.strip_update(instrumented, PLLDB_LAYER))
    assert not decisions.is_instrumented(stripped, PLLDB_LAYER)
    assert decisions.session_of(stripped) is None


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(original=originals(), first=targets, second=targets)
def test_instrumenting_over_an_earlier_session_still_strips_back_to_the_deployed_function(
    original, first, second
) -> None:
    environment, layers, timeout = original
    deployed = configuration(environment, layers, timeout)
    once = applied(deployed, decisions.instrument_update(deployed, first))

    twice = applied(once, decisions.instrument_update(once, second))

    assert decisions.session_of(twice) == second.session_id
    assert decisions.original_of(twice, PLLDB_LAYER) == Original(environment, layers, timeout)
    assert [layer["Arn"] for layer in twice["Layers"]] == [*layers, PLLDB_LAYER], "one plldb layer, last"


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(original=originals(), session=targets)
def test_instrumenting_adds_the_layer_last_the_sessions_variables_and_records_what_it_replaced(
    original, session
) -> None:
    environment, layers, timeout = original
    update = decisions.instrument_update(configuration(environment, layers, timeout), session)

    expected = dict(environment or {})
    if expected.get("AWS_LAMBDA_EXEC_WRAPPER") == OWN_WRAPPER:
        expected[protocol.ENV_ORIGINAL_EXEC_WRAPPER] = OWN_WRAPPER
    expected.update(
        {
            protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
            protocol.ENV_SESSION_ID: session.session_id,
            protocol.ENV_DISPATCHER: session.dispatcher_arn,
            protocol.ENV_INVOCATIONS_TABLE: session.invocations_table,
            protocol.ENV_PAYLOAD_BUCKET: session.payload_bucket,
            protocol.ENV_FALLBACK: session.fallback,
            protocol.ENV_ORIGINAL_TIMEOUT: str(timeout),
        }
    )
    if environment is None:
        expected[protocol.ENV_ORIGINAL_ENVIRONMENT] = protocol.ORIGINAL_ENVIRONMENT_ABSENT
    assert update == {
        "Environment": {"Variables": expected},
        "Layers": [*layers, PLLDB_LAYER],
        "Timeout": session.timeout,
    }


def test_an_empty_environment_and_no_environment_are_told_apart() -> None:
    for environment in (None, {}):
        deployed = configuration(environment, [], 3)
        instrumented = applied(deployed, decisions.instrument_update(deployed, target()))
        assert decisions.original_of(instrumented, PLLDB_LAYER).environment == environment
        assert decisions.variables(deployed) == environment


def test_an_older_plldb_version_of_the_layer_is_plldbs_and_stripped() -> None:
    config = configuration(
        {protocol.ENV_SESSION_ID: OTHER_SESSION, "GREETING": "hi"},
        [APP_LAYERS[0], OLDER_PLLDB_LAYER],
        30,
    )
    assert decisions.is_instrumented(config, PLLDB_LAYER)
    update = decisions.instrument_update(config, target())
    assert update["Layers"] == [APP_LAYERS[0], PLLDB_LAYER]


def test_a_function_with_traces_of_an_older_plldb_keeps_its_current_timeout_and_says_so() -> None:
    """An older plldb kept the original elsewhere: without PLLDB_ORIGINAL_TIMEOUT it cannot be known."""
    config = configuration(
        {
            "GREETING": "hi",
            protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH,
            protocol.ENV_SESSION_ID: OTHER_SESSION,
            "PLLDB_FALLBACK": "error",
        },
        [APP_LAYERS[1], OLDER_PLLDB_LAYER],
        900,
    )
    assert decisions.original_of(config, PLLDB_LAYER) == Original(
        environment={"GREETING": "hi"}, layers=[APP_LAYERS[1]], timeout=900, derived=True
    )


def test_a_function_without_any_trace_of_plldb_is_its_own_original() -> None:
    config = configuration({"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": OWN_WRAPPER}, [APP_LAYERS[0]], 12)
    assert not decisions.is_instrumented(config, PLLDB_LAYER)
    assert decisions.original_of(config, PLLDB_LAYER) == Original(
        {"GREETING": "hi", "AWS_LAMBDA_EXEC_WRAPPER": OWN_WRAPPER}, [APP_LAYERS[0]], 12
    )
    assert decisions.session_of(config) is None
    assert decisions.original_of({"FunctionName": "f"}, PLLDB_LAYER) == Original(None, [], 3)


@pytest.mark.parametrize(
    "variables",
    [
        {protocol.ENV_SESSION_ID: SESSION},
        {protocol.ENV_EXEC_WRAPPER: protocol.LAYER_WRAPPER_PATH},
        {protocol.ENV_ORIGINAL_TIMEOUT: "3"},
        {protocol.ENV_ALIASES: "{}"},
    ],
)
def test_any_one_trace_marks_a_function_instrumented(variables: dict[str, str]) -> None:
    assert decisions.is_instrumented(configuration(variables, [], 3), PLLDB_LAYER)


def test_a_function_with_only_plldbs_layer_is_instrumented_but_only_when_the_layer_is_known() -> None:
    config = configuration(None, [PLLDB_LAYER], 3)
    assert decisions.is_instrumented(config, PLLDB_LAYER)
    assert not decisions.is_instrumented(config, "")


# --- Refusals: nothing changes and the message says what to do ---------------------------------------
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"PackageType": "Image", "Runtime": None}, "container image functions cannot use layers"),
        ({"Runtime": "nodejs20.x"}, "runtime nodejs20.x is not Python"),
        ({"Runtime": None}, "runtime unknown is not Python"),
        (
            {"Layers": [{"Arn": arn} for arn in APP_LAYERS]},
            "it already has 5 layers and Lambda allows 5, so the plldb layer cannot be added; remove a layer "
            "or leave this function out with --function",
        ),
        (
            {"Environment": {"Variables": {"BIG": "x" * 3900}}},
            "its variables and plldb's would exceed Lambda's 4 KB limit on a function's environment; shorten "
            "its variables or leave this function out with --function",
        ),
    ],
    ids=["image", "node", "no-runtime", "five-layers", "four-kilobytes"],
)
def test_functions_that_cannot_carry_plldb_are_refused_with_the_reason(fields, message: str) -> None:
    config = configuration(None, [], 3)
    config.update(fields)
    with pytest.raises(CannotInstrument) as refused:
        decisions.instrument_update(config, target())
    assert str(refused.value) == message


def test_four_layers_and_an_environment_just_under_the_limit_are_accepted() -> None:
    base = decisions.instrumented_variables(Original({}, [], 3), target())
    room = decisions.MAX_ENVIRONMENT_BYTES - decisions.environment_bytes(base) - len("BIG")
    config = configuration({"BIG": "é" * (room // 2)}, APP_LAYERS[:4], 3)
    update = decisions.instrument_update(config, target())
    assert decisions.environment_bytes(update["Environment"]["Variables"]) <= decisions.MAX_ENVIRONMENT_BYTES
    assert len(update["Layers"]) == 5
    config["Environment"]["Variables"]["BIG"] += "é"
    with pytest.raises(CannotInstrument):
        decisions.instrument_update(config, target())


def test_the_environment_limit_counts_utf8_bytes_of_names_and_values() -> None:
    assert decisions.environment_bytes({"AB": "é€"}) == 2 + 2 + 3


def test_the_session_timeout_is_kept_within_lambdas_bounds() -> None:
    config = configuration(None, [], 3)
    assert decisions.instrument_update(config, target(timeout=5000))["Timeout"] == 900
    assert decisions.instrument_update(config, target(timeout=0))["Timeout"] == 1


# --- Aliases -------------------------------------------------------------------------------------------
weights = st.dictionaries(st.integers(1, 99).map(str), st.floats(0.01, 0.99, allow_nan=False), max_size=2)
alias_targets = st.builds(AliasTarget, version=st.integers(1, 999).map(str), weights=weights)


@settings(deadline=None)  # no wall-clock bound on an example: the machine may be busy
@given(
    st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True), alias_targets, max_size=4)
)
def test_where_each_alias_pointed_round_trips_through_the_published_versions_variable(aliases) -> None:
    config = configuration({protocol.ENV_ALIASES: decisions.aliases_variable(aliases)}, [], 3)
    assert decisions.alias_originals(config) == aliases


def test_alias_targets_read_and_write_lambdas_alias_shape() -> None:
    alias = {
        "Name": "live",
        "FunctionVersion": "3",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}},
    }
    original = AliasTarget.of(alias)
    assert original == AliasTarget("3", {"2": 0.1})
    assert original.update() == {
        "FunctionVersion": "3",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}},
    }
    assert AliasTarget.of({"Name": "plain", "FunctionVersion": "$LATEST"}) == AliasTarget("$LATEST", {})
    assert decisions.redirect_update("7") == {
        "FunctionVersion": "7",
        "RoutingConfig": {"AdditionalVersionWeights": {}},
    }
    assert decisions.aliases_variable({"live": original}) == '{"live":{"version":"3","weights":{"2":0.1}}}'


@pytest.mark.parametrize(
    "text", ["not json", "[1]", '{"live": 3}', '{"live": {"version": 3}}', '{"live": {"weights": {}}}']
)
def test_an_unreadable_aliases_variable_records_nothing(text: str) -> None:
    assert decisions.alias_originals(configuration({protocol.ENV_ALIASES: text}, [], 3)) == {}


def test_unreadable_weights_are_dropped_not_trusted() -> None:
    text = '{"live": {"version": "4", "weights": {"3": "0.5", "2": 0.25}}}'
    assert decisions.alias_originals(configuration({protocol.ENV_ALIASES: text}, [], 3)) == {
        "live": AliasTarget("4", {"2": 0.25})
    }


def test_published_versions_are_described_with_their_session() -> None:
    assert decisions.published_description(SESSION) == f"plldb session {SESSION}"


@pytest.mark.parametrize(
    ("arn", "base"),
    [
        (PLLDB_LAYER, f"{REGION_ACCOUNT}:layer:plldb-debugger"),
        (f"{REGION_ACCOUNT}:layer:plldb-debugger", f"{REGION_ACCOUNT}:layer:plldb-debugger"),
        ("", ""),
    ],
)
def test_the_layer_base_names_every_version_of_a_layer(arn: str, base: str) -> None:
    assert decisions.layer_base(arn) == base
