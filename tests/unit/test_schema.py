"""`tapers schema`: a JSON Schema of the Taperfile that editors can use, kept in the repo."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tapers.taperfile.schema import taperfile_schema

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def schema() -> dict:
    return taperfile_schema()


def test_the_shipped_schema_is_the_generated_one(schema: dict) -> None:
    shipped = json.loads((ROOT / "taperfile.schema.json").read_text())
    assert shipped == schema, "run `tapers schema > taperfile.schema.json`"


def test_every_key_has_a_description(schema: dict) -> None:
    models = {"Taperfile": schema, **schema["$defs"]}
    missing = [f"{name}.{key}" for name, model in models.items()
               for key, prop in model.get("properties", {}).items() if not prop.get("description")]
    assert missing == []


def test_the_example_is_valid_and_mistakes_are_not(schema: dict) -> None:
    example = yaml.safe_load((ROOT / "Taperfile.example.yaml").read_text())
    jsonschema.validate(example, schema)
    for path, key in ((("machines", "web"), "memroy"), ((), "machine"), (("defaults",), "prvileged")):
        wrong = copy.deepcopy(example)
        target = wrong
        for part in path:
            target = target[part]
        target[key] = 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schema)


def test_what_tapers_reads_before_validating_is_accepted(schema: dict) -> None:
    """Sizes as text, a shell step as a string, x- keys, variables where numbers go."""
    jsonschema.validate({
        "version": 1, "x-base": {"memory": "1G"},
        "machines": {"web": {"memory": "512Mi", "cpus": "${CPUS:-1}", "x-note": "kept out",
                             "provision": [{"shell": "echo hi"}, {"shell": {"path": "a.sh"}, "watch": ["*.sql"]}]}},
    }, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "machines": {"web": {"memory": "lots"}}}, schema)
