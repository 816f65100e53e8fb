"""Config loading: every bad config is one ConfigError naming file, line, dotted key and a hint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from engine.config import Config, config_hash, load_config, locate_key
from engine.errors import ConfigError
from engine.methods import method_config
from engine.methods.codeclm import CodecLMConfig
from engine.methods.respond import RespondConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# Line numbers below refer to this text (1-based).
GOOD = """\
[run]
method = "codeclm"
input = "seeds.jsonl"
seed = 1

[endpoints.strong]
base_url = "http://127.0.0.1:8000/v1"
model = "m-strong"

[endpoints.target]
base_url = "sim"
model = "m-target"

[roles]
strong = "strong"
target = "target"
"""


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, overrides: list[str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value


def assert_one_line(err: ConfigError, where: str) -> None:
    text = str(err)
    assert "\n" not in text
    assert where in text


@dataclass(frozen=True)
class BadFile:
    id: str
    text: str
    field: str | None
    line: int | None
    reason: str  # substring of err.reason


BAD_FILES = [
    BadFile("malformed-toml", GOOD.replace("seed = 1", "seed = = 1"), None, 4, "not valid TOML"),
    BadFile("unterminated-table", GOOD.replace("[roles]", "[roles"), None, 14, "not valid TOML"),
    BadFile(
        "unknown-run-key",
        GOOD.replace("seed = 1", "seed = 1\nfoo = 2"),
        "run.foo",
        5,
        "unknown key",
    ),
    BadFile("wrong-type", GOOD.replace("seed = 1", 'seed = "x"'), "run.seed", 4, "expected `int`"),
    BadFile(
        "zero-concurrency",
        GOOD.replace('model = "m-strong"', 'model = "m-strong"\nmax_concurrency = 0'),
        "endpoints.strong.max_concurrency",
        9,
        ">= 1",
    ),
    BadFile(
        "negative-concurrency",
        GOOD.replace('model = "m-target"', 'model = "m-target"\nmax_concurrency = -4'),
        "endpoints.target.max_concurrency",
        13,
        ">= 1",
    ),
    BadFile(
        "unknown-endpoint-key",
        GOOD.replace('model = "m-strong"', 'model = "m-strong"\nmodle = "typo"'),
        "endpoints.strong.modle",
        9,
        "unknown key",
    ),
    BadFile(
        "unknown-key-inline-endpoint",
        GOOD.replace(
            '[endpoints.target]\nbase_url = "sim"\nmodel = "m-target"\n',
            '[endpoints]\ntarget = { base_url = "sim", model = "m", bogus = 1 }\n',
        ),
        "endpoints.target.bogus",
        11,
        "unknown key",
    ),
    BadFile(
        "missing-model",
        GOOD.replace('model = "m-target"\n', ""),
        "endpoints.target.model",
        10,
        "missing",
    ),
    BadFile("missing-roles", GOOD.split("[roles]")[0], "roles", None, "[roles] table is missing"),
    BadFile(
        "role-names-undefined-endpoint",
        GOOD + 'judge = "nope"\n',
        "roles.judge",
        17,
        "names endpoint 'nope'",
    ),
    BadFile(
        "base-url-not-http",
        GOOD.replace("http://127.0.0.1:8000/v1", "ftp://example.com"),
        "endpoints.strong.base_url",
        7,
        "not an http(s) URL",
    ),
    BadFile(
        "base-url-no-host",
        GOOD.replace("http://127.0.0.1:8000/v1", "http://"),
        "endpoints.strong.base_url",
        7,
        "not an http(s) URL",
    ),
    BadFile(
        "sim-settings-on-real-endpoint",
        GOOD.replace('model = "m-strong"', 'model = "m-strong"\nsim = { seed = 1 }'),
        "endpoints.strong.sim",
        9,
        "sim settings",
    ),
    BadFile(
        "no-endpoints",
        '[run]\ninput = "x.jsonl"\n\n[roles]\nstrong = "s"\n',
        "endpoints",
        None,
        "no endpoint",
    ),
    BadFile(
        "missing-input",
        GOOD.replace('input = "seeds.jsonl"\n', ""),
        "run.input",
        1,
        "no input file",
    ),
    BadFile(
        "bad-progress-literal",
        GOOD.replace("seed = 1", 'progress = "loud"'),
        "run.progress",
        4,
        "invalid enum value 'loud'",
    ),
    BadFile("top-level-source", 'source = "x"\n' + GOOD, "source", 1, "unknown key"),
]


@pytest.mark.parametrize("case", BAD_FILES, ids=lambda c: c.id)
def test_bad_file(tmp_path: Path, case: BadFile) -> None:
    path = write(tmp_path, case.text)
    err = load_error(path)
    assert err.path == str(path)
    assert err.field == case.field
    assert err.line == case.line
    assert case.reason in err.reason
    assert err.hint
    assert err.exit_code == 2
    assert_one_line(err, "run.toml")
    if case.line is not None:
        assert f"run.toml:{case.line}:" in str(err)
    if case.field is not None:
        assert case.field in str(err)


def test_unknown_key_hint_lists_valid_keys(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, GOOD.replace("seed = 1", "seed = 1\nfoo = 2")))
    assert err.hint is not None
    assert "valid keys here:" in err.hint
    for key in ("method", "input", "output", "seed", "max_items_in_flight", "progress"):
        assert key in err.hint
    assert "source" not in err.hint


def test_unknown_endpoint_key_hint_lists_endpoint_keys(tmp_path: Path) -> None:
    err = load_error(
        write(tmp_path, GOOD.replace('model = "m-strong"', 'model = "m-strong"\nmodle = "x"'))
    )
    assert err.hint is not None
    for key in ("base_url", "model", "max_concurrency", "structured_output"):
        assert key in err.hint


def test_role_error_hint_names_defined_endpoints(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, GOOD + 'judge = "nope"\n'))
    assert err.hint == "use one of: strong, target"


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    err = load_error(path)
    assert err.path == str(path)
    assert err.line is None and err.field is None
    assert "not found" in err.reason
    assert_one_line(err, "missing.toml")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(GOOD.replace("m-strong", "m-str\xf6ng").encode("latin-1"))
    err = load_error(path)
    assert err.path == str(path)
    assert err.line is None and err.field is None
    assert "cannot read" in err.reason
    assert_one_line(err, "latin1.toml")


def test_key_after_multiline_template_is_located(tmp_path: Path) -> None:
    # A template line such as "[Question]" inside a multi-line string is not a table header.
    text = GOOD + '\n[method.codeclm]\njudge_prompt = """\n[Question]\nx = 1\n"""\ntheta = -1\n'
    assert locate_key(text, "method.codeclm.theta") == 23
    assert locate_key(text, "Question.x") is None
    config = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        method_config(config)
    assert info.value.field == "method.codeclm.judge_prompt"
    assert info.value.line == 19


# ------------------------------------------------------------------ --set overrides
def test_override_typed_int(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), ["run.seed=3"])
    assert config.run.seed == 3
    assert isinstance(config.run.seed, int)


def test_override_url_is_a_plain_string(tmp_path: Path) -> None:
    url = "http://10.0.0.7:9000/v1"
    config = load_config(write(tmp_path, GOOD), [f"endpoints.target.base_url={url}"])
    assert config.endpoints["target"].base_url == url
    assert not config.endpoints["target"].simulated


def test_override_typed_literals(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD),
        ["endpoints.strong.stream=true", 'run.output="elsewhere"', "endpoints.strong.rpm=1.5"],
    )
    assert config.endpoints["strong"].stream is True
    assert config.run.output == "elsewhere"
    assert config.endpoints["strong"].rpm == 1.5


def test_override_creates_nested_tables(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD),
        [
            "method.codeclm.theta=2.5",
            "endpoints.judge.base_url=sim",
            "endpoints.judge.model=j",
            "roles.judge=judge",
        ],
    )
    assert config.method == {"codeclm": {"theta": 2.5}}
    assert config.endpoints["judge"].model == "j"
    assert config.role_endpoint("judge") == "judge"
    assert config.role_endpoint("target") == "target"


@pytest.mark.parametrize("item", ["noequals", "=3", "run..seed=1", "run.=1", " =x"])
def test_override_bad_form(tmp_path: Path, item: str) -> None:
    err = load_error(write(tmp_path, GOOD), [item])
    assert err.path == "--set"
    assert err.line is None
    assert "cannot read override" in err.reason
    assert_one_line(err, "--set")


@dataclass(frozen=True)
class BadOverride:
    id: str
    item: str
    field: str
    reason: str


BAD_OVERRIDES = [
    BadOverride("type-error", "run.seed=abc", "run.seed", "expected `int`"),
    BadOverride(
        "range-error-in-endpoint",
        "endpoints.strong.max_concurrency=0",
        "endpoints.strong.max_concurrency",
        ">= 1",
    ),
    BadOverride("unknown-key", "run.sed=1", "run.sed", "unknown key"),
    BadOverride("crosses-a-value", "run.seed.x=1", "run.seed", "not a table"),
    BadOverride(
        "bad-url",
        "endpoints.strong.base_url=ftp://x",
        "endpoints.strong.base_url",
        "not an http(s) URL",
    ),
    BadOverride("undefined-role-endpoint", "roles.judge=zz", "roles.judge", "names endpoint 'zz'"),
]


@pytest.mark.parametrize("case", BAD_OVERRIDES, ids=lambda c: c.id)
def test_bad_override_names_set(tmp_path: Path, case: BadOverride) -> None:
    err = load_error(write(tmp_path, GOOD), [case.item])
    assert err.path == "--set"
    assert err.line is None
    assert err.field == case.field
    assert case.reason in err.reason
    assert_one_line(err, "--set")
    assert str(err).startswith(f"--set: {case.field}: ")


def test_override_does_not_touch_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    load_config(path, ["run.seed=9"])
    assert path.read_text(encoding="utf-8") == GOOD


# ------------------------------------------------------------------ shipped configs
@pytest.mark.parametrize("name", ["demo.toml", "codeclm.toml", "respond.toml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.run.input is not None
    assert config.resolve(config.run.input).is_file()
    assert config.roles is not None and config.roles.strong in config.endpoints
    cfg = method_config(config)
    assert isinstance(cfg, RespondConfig if config.run.method == "respond" else CodecLMConfig)


def test_demo_is_simulated_and_codeclm_is_not() -> None:
    assert load_config(CONFIGS / "demo.toml").simulated
    assert not load_config(CONFIGS / "codeclm.toml").simulated


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.source == str((tmp_path / "run.toml").resolve())
    assert config.resolve("seeds.jsonl") == tmp_path.resolve() / "seeds.jsonl"
    assert config.resolve("/abs/x") == Path("/abs/x")


# ------------------------------------------------------------------ config_hash
def test_config_hash_is_stable() -> None:
    a = config_hash(load_config(CONFIGS / "demo.toml"))
    b = config_hash(load_config(CONFIGS / "demo.toml"))
    assert a == b
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != config_hash(load_config(CONFIGS / "codeclm.toml"))


@pytest.mark.parametrize(
    "override",
    [
        "run.output=/tmp/elsewhere",
        "endpoints.strong.base_url=http://10.1.2.3:8000/v1",
        "endpoints.strong.max_concurrency=3",
        "endpoints.strong.timeout_s=5",
        "endpoints.strong.api_key_env=OTHER_KEY",
        "run.max_items_in_flight=2",
        "run.progress=off",
    ],
)
def test_config_hash_ignores_where_and_how_fast(override: str) -> None:
    path = CONFIGS / "codeclm.toml"
    assert config_hash(load_config(path, [override])) == config_hash(load_config(path))


@pytest.mark.parametrize(
    "override",
    [
        "run.seed=1",
        'endpoints.strong.model="gpt-4o-mini"',
        'endpoints.target.model="other"',
        "method.codeclm.theta=2.0",
        "endpoints.strong.params.top_p=0.5",
        'roles.judge="target"',
    ],
)
def test_config_hash_changes_with_content(override: str) -> None:
    path = CONFIGS / "codeclm.toml"
    assert config_hash(load_config(path, [override])) != config_hash(load_config(path))


def test_config_hash_ignores_tables_of_other_methods(tmp_path: Path) -> None:
    base = load_config(write(tmp_path, GOOD))
    other = load_config(write(tmp_path, GOOD + "\n[method.respond]\nthreshold = 5\n", "other.toml"))
    assert config_hash(base) == config_hash(other)


def test_config_hash_of_a_config_built_in_code() -> None:
    from engine.config import OpenAIEndpoint, RolesConfig, RunConfig, SimEndpoint

    # Built from the Structs: each kind of endpoint is its own Struct.
    config = Config(
        run=RunConfig(input="x.jsonl"),
        endpoints={
            "s": SimEndpoint(model="m"),
            "o": OpenAIEndpoint(base_url="http://h/v1", model="m"),
        },
        roles=RolesConfig(strong="s"),
    )
    assert config.source == "" and config.endpoints["s"].simulated
    assert len(config_hash(config)) == 16
    # From a mapping, the endpoint's kind is its union's tag.
    converted = msgspec.convert(
        {
            "run": {"input": "x.jsonl"},
            "endpoints": {"s": {"kind": "sim", "model": "m"}},
            "roles": {"strong": "s"},
        },
        Config,
    )
    assert config_hash(converted) == config_hash(
        msgspec.structs.replace(config, endpoints={"s": SimEndpoint(model="m")})
    )


# ------------------------------------------------------------------ method tables
def test_unknown_method(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('method = "codeclm"', 'method = "evol"'))
    config = load_config(path)
    with pytest.raises(ConfigError) as info:
        method_config(config)
    err = info.value
    assert err.field == "run.method"
    assert err.line == 2
    assert "unknown method 'evol'" in err.reason
    assert err.hint is not None and "codeclm" in err.hint and "respond" in err.hint
    assert_one_line(err, "run.toml")


def test_unknown_method_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + "\n[method.foo]\nx = 1\n"))
    with pytest.raises(ConfigError) as info:
        method_config(config)
    err = info.value
    assert err.field == "method.foo"
    assert err.line == 18
    assert "unknown method table 'foo'" in err.reason
    assert_one_line(err, "run.toml")


@pytest.mark.parametrize(
    ("extra", "field", "line", "reason"),
    [
        ("[method.codeclm]\ntheta = 2\nxyz = 1\n", "method.codeclm.xyz", 20, "unknown key"),
        ("[method.codeclm]\ntheta = -1\n", "method.codeclm.theta", 19, ">= 0"),
        (
            '[method.codeclm]\nmax_iterations = "4"\n',
            "method.codeclm.max_iterations",
            19,
            "expected `int`",
        ),
        (
            "[method.codeclm.templates]\nbogus = 1\n",
            "method.codeclm.templates.bogus",
            19,
            "unknown key",
        ),
        (
            "[method.codeclm]\ntemplates = { bogus = 1 }\n",
            "method.codeclm.templates.bogus",
            19,
            "unknown key",
        ),
    ],
)
def test_bad_codeclm_table(tmp_path: Path, extra: str, field: str, line: int, reason: str) -> None:
    config = load_config(write(tmp_path, GOOD + "\n" + extra))
    with pytest.raises(ConfigError) as info:
        method_config(config)
    err = info.value
    assert err.field == field
    assert err.line == line
    assert reason in err.reason
    assert err.path == config.source
    assert_one_line(err, "run.toml")


def test_codeclm_unknown_key_hint_lists_method_keys(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD + "\n[method.codeclm]\nxyz = 1\n"))
    with pytest.raises(ConfigError) as info:
        method_config(config)
    assert info.value.hint is not None
    for key in ("metadata_count", "theta", "max_iterations", "templates"):
        assert key in info.value.hint


def test_codeclm_table_values_and_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, GOOD + "\n[method.codeclm]\ntheta = 2\nmetadata_count = 7\n")
    )
    cfg = method_config(config)
    assert isinstance(cfg, CodecLMConfig)
    assert cfg.theta == 2.0
    assert cfg.metadata_count == 7
    assert cfg.max_iterations == 4 and cfg.rubric_count == 4 and cfg.max_skills == 3


def test_method_override_error_is_found_in_method_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), ["method.codeclm.theta=-2"])
    with pytest.raises(ConfigError) as info:
        method_config(config)
    assert info.value.field == "method.codeclm.theta"


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.toml")),
    ids=lambda p: p.name,
)
def test_every_shipped_config_validates(path: Path) -> None:
    from engine.methods import method_config

    config = load_config(path)
    method_config(config)
    assert config.resolve(config.run.input or "").exists()


def test_enumerated_key_error_lists_the_allowed_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[run]\ninput = "x.jsonl"\nprogress = "loud"\n[endpoints.a]\nbase_url = "sim"\nmodel = "m"\n[roles]\nstrong = "a"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "run.progress" and info.value.line == 3
    assert "'auto'" in str(info.value) and "'rich'" in str(info.value)
