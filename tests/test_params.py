"""One declaration per parameter: `ALSParams`/`BiasParams` fields (mfspark.params) are the only source of the
models' options, profile tables and parameter files; `mfspark tune` then `mfspark pipeline --params` runs the tuned
model nightly."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from mfspark import params
from mfspark.commands import pipeline as pipeline_command
from mfspark.commands.args import add_model_options, given_params
from mfspark.commands.main import COMMANDS
from mfspark.errors import ConfigError, InputError
from mfspark.models.als.estimator import ALSParams
from mfspark.models.bias import BiasParams
from mfspark.models.lists_model import IMPLICIT_LISTS
from tests.test_pipeline import tiny_release

MODEL_COMMANDS = ("train", "tune", "sweep", "compare-mllib", "pipeline", "baseline")


def parser_of(command: str) -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    return parser


def declared_options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_option_is_derived_from_its_dataclass_field(command):
    """An option spelled like a model parameter (`--rank`, `--lists-alpha`, `--lambda-u`...) must carry its
    field's doc: a hand-written `add_argument("--rank", ...)` beside the schema fails here."""
    options = declared_options(parser_of(command))
    checked = 0
    for cls in (ALSParams, BiasParams):
        for f, spec in params.specs(cls):
            for prefix in ("", "lists-"):
                action = options.get(params.option_of(f, spec, prefix))
                if action is None or not spec.settable:
                    continue
                assert action.help.startswith(spec.doc), f"{command} {action.option_strings} is declared by hand"
                assert action.default is None  # so a profile or a --params file below it can apply
                checked += 1
    assert checked >= 2


def test_settable_fields_become_options_with_their_bounds_choices_and_flags():
    parser = argparse.ArgumentParser()
    add_model_options(parser, ALSParams)
    args = parser.parse_args(["--rank", "7", "--constant-reg", "--no-biases", "--bias-fit", "learned"])
    assert given_params(args, ALSParams) == {"rank": 7, "scale_reg": False, "biases": False, "bias_fit": "learned"}
    assert given_params(parser.parse_args([]), ALSParams) == {}
    with pytest.raises(SystemExit):
        parser.parse_args(["--bias-fit", "both"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--seed", "3"])  # the seed is the command's (shared with the split), not an ALS option
    with pytest.raises(ConfigError, match=r"^rank \(--rank\) must be 1 or more, got 0$"):
        ALSParams(rank=0).validate()
    with pytest.raises(ConfigError, match=r"num_item_blocks \(--item-blocks\) must be 65536 or less, got 70000"):
        ALSParams(num_item_blocks=70000).validate()


def test_a_table_is_type_checked_and_refuses_unknown_keys():
    assert params.from_table(ALSParams, {"rank": 5, "reg": 1, "biases": True}, "t") == {
        "rank": 5, "reg": 1.0, "biases": True}
    with pytest.raises(ConfigError, match="^t: rank must be int, got 2.5$"):
        params.from_table(ALSParams, {"rank": 2.5}, "t")
    with pytest.raises(ConfigError, match="^t: biases must be bool, got 1$"):
        params.from_table(ALSParams, {"biases": 1}, "t")
    with pytest.raises(ConfigError, match=r"^t: unknown key rnak \(known: rank, reg"):
        params.from_table(ALSParams, {"rnak": 5}, "t")
    with pytest.raises(ConfigError, match="unknown key biases"):
        params.from_table(ALSParams, {"biases": True}, "t", names=("rank", "alpha"))


def pipeline_settings(tmp_path: Path, profile: str, argv: list[str]) -> tuple[dict, dict]:
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "p.toml").write_text(profile)
    parser = parser_of("pipeline")
    parser.add_argument("--profile", default="p")
    parser.add_argument("--conf-dir", default=str(conf))
    args = parser.parse_args(["--input", str(tmp_path), "--out", str(tmp_path / "root"), *argv])
    return pipeline_command.settings(args)


def params_file(path: Path, **sections) -> str:
    path.write_text(json.dumps({"format": "mfspark-params/1", **sections}))
    return str(path)


def test_pipeline_models_layer_built_in_then_profile_then_preset_then_file_then_options(tmp_path):
    profile = "[pipeline.als]\nrank = 20\nreg = 0.2\nmax_iter = 3\n[pipeline.lists]\nalpha = 4.0\n" \
              "[pipeline.baseline]\nlambda_u = 1.5\n"
    _, models = pipeline_settings(tmp_path, profile, [])
    assert (models["als"].rank, models["als"].reg, models["als"].max_iter, models["als"].biases) == (20, 0.2, 3, True)
    assert (models["lists"].alpha, models["lists"].rank, models["lists"].implicit) == (4.0, IMPLICIT_LISTS.rank, True)
    assert (models["baseline"].lambda_u, models["baseline"].lambda_i) == (1.5, BiasParams().lambda_i)

    tuned = params_file(tmp_path / "params.json", als={"rank": 30, "bias_fit": "learned", "rated_sides": "both"},
                        lists={"rank": 64})
    _, models = pipeline_settings(tmp_path, profile, ["--preset", "accurate", "--params", tuned, "--lists-rank", "8"])
    # the preset's rank 50 and reg 0.12 over the profile, the file's rank over the preset, the option over the file
    assert (models["als"].rank, models["als"].reg, models["als"].rated_sides) == (30, 0.12, "both")
    assert models["lists"].rank == 8
    _, models = pipeline_settings(tmp_path, profile, ["--params", tuned, "--rank", "40"])
    assert models["als"].rank == 40


def test_the_old_flat_pipeline_keys_still_apply_with_a_warning_and_unknown_keys_fail(tmp_path, caplog):
    _, models = pipeline_settings(tmp_path, "[pipeline]\nrank = 15\nlists_alpha = 3.0\n", [])
    assert (models["als"].rank, models["lists"].alpha) == (15, 3.0)
    assert "[pipeline] rank is now [pipeline.als] rank" in caplog.text
    with pytest.raises(ConfigError, match=r"p.toml \[pipeline.als\]: unknown key alpha"):
        pipeline_settings(tmp_path, "[pipeline.als]\nalpha = 2.0\n", [])  # implicit feedback is the lists model's
    with pytest.raises(ConfigError, match=r"unknown \[pipeline\] settings rnak"):
        pipeline_settings(tmp_path, "[pipeline]\nrnak = 2\n", [])


@pytest.mark.parametrize(("content", "message"), [
    (None, "--params {path} not found"),
    ("{not json", "--params {path}: not JSON"),
    ('{"als": {}}', "--params {path}: not a parameter file"),
    ('{"format": "mfspark-params/1", "als": {"rank": "x"}}', "--params {path}: als: rank must be int, got 'x'"),
    ('{"format": "mfspark-params/1", "cold_start": "guess"}', "--params {path}: cold_start must be one of"),
])
def test_a_bad_params_file_is_one_line_naming_it(tmp_path, content, message):
    path = tmp_path / "params.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((InputError, ConfigError)) as raised:
        pipeline_settings(tmp_path, "", ["--params", str(path)])
    assert str(raised.value).startswith(message.format(path=path)) and "\n" not in str(raised.value)


def test_tune_once_then_the_nightly_pipeline_runs_the_tuned_model(cli_with_test_session, spark, tmp_path, capsys):
    """The two commands a user runs: `mfspark tune` (a model the pipeline's built-in options cannot express:
    learned biases, implicit information on both sides, constant reg), then `mfspark pipeline --params`."""
    release = tiny_release(tmp_path / "release", users=40, movies=25)
    main = cli_with_test_session
    assert main(["ingest", "--input", str(release), "--out", str(tmp_path / "ingest")]) == 0
    assert main(["tune", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "tune"), "--max-iter", "3",
                 "--ranks", "2,3", "--regs", "10", "--bias-fits", "learned", "--bias-regs", "1",
                 "--implicit-weights", "0.5", "--implicit-sides", "both", "--constant-reg", "--biases",
                 "--bias-fit", "learned"]) == 0
    points = [row.asDict() for row in spark.read.parquet(str(tmp_path / "tune" / "tune")).collect()]
    best = min(points, key=lambda p: p["validation_rmse"])  # the choice, recomputed from the grid table
    capsys.readouterr()
    assert main(["pipeline", "--input", str(release), "--out", str(tmp_path / "root"), "--top-n", "0",
                 "--params", str(tmp_path / "tune" / "params.json")]) == 0
    assert (tmp_path / "root" / "latest" / "_SUCCESS").is_file()
    model = json.loads((tmp_path / "root" / "latest" / "train" / "factors" / "metadata.json").read_text())["params"]
    assert (model["rank"], model["reg"], model["max_iter"]) == (best["rank"], best["reg"], 3)
    assert (model["bias_fit"], model["rated_weight"], model["rated_sides"], model["scale_reg"]) == (
        "learned", 0.5, "both", False)
    evaluate = json.loads((tmp_path / "root" / "latest" / "evaluate" / "metrics.json").read_text())
    assert evaluate["params"]["rank"] == best["rank"]


# A metadata.json's params as mfspark wrote them before the rated indicator's fields were renamed (they were
# implicit_weight and implicit_sides), cold_start still among them.
OLD_METADATA_PARAMS = json.loads("""{
  "rank": 3, "reg": 0.05, "max_iter": 4, "num_user_blocks": 2, "num_item_blocks": 2, "seed": 5,
  "nonnegative": false, "checkpoint_interval": 10, "storage_level": "MEMORY_AND_DISK", "biases": true,
  "bias_reg_user": 2.0, "bias_reg_item": 3.0, "bias_sweeps": 2, "min_rating": 0.5, "max_rating": 5.0,
  "bias_fit": "learned", "implicit_weight": 0.4, "implicit_sides": "both", "scale_reg": false,
  "implicit": false, "alpha": 1.0, "cold_start": "baseline"
}""")


def test_old_saved_params_load_with_the_rated_indicator_under_its_new_names():
    loaded = ALSParams.from_dict(OLD_METADATA_PARAMS)
    assert (loaded.rated_weight, loaded.rated_sides, loaded.scale_reg, loaded.implicit) == (0.4, "both", False, False)
    assert (loaded.rank, loaded.min_rating, loaded.bias_fit) == (3, 0.5, "learned")
    loaded.validate()
    assert ALSParams.from_dict(dataclasses.asdict(loaded)) == loaded  # what save writes now loads the same
    assert "implicit_weight" not in dataclasses.asdict(loaded)


def test_old_keys_in_tables_and_library_calls_and_the_unchanged_options():
    from mfspark.models.als.estimator import ALS

    table = params.from_table(ALSParams, {"implicit_weight": 0.3, "implicit_sides": "both"}, "profile")
    assert table == {"rated_weight": 0.3, "rated_sides": "both"}
    assert ALS(biases=True, bias_fit="learned", implicit_weight=0.2).params.rated_weight == 0.2
    parsed = parser_of("train").parse_args(["--out", "o", "--implicit-weight", "0.3", "--implicit-sides", "both"])
    chosen = given_params(parsed, ALSParams)
    assert (chosen["rated_weight"], chosen["rated_sides"]) == (0.3, "both")
    flags = declared_options(parser_of("train"))
    assert "--implicit-weight" in flags and "--rated-weight" not in flags
