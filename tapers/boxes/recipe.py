"""Box recipes: the YAML files in boxes/ saying how to build a box."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tapers.boxes.cache import slug
from tapers.errors import BoxError, InvalidBoxError
from tapers.resources import data_dir


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Debootstrap(_Strict):
    suite: str
    variant: str = "minbase"
    mirror: str = "http://deb.debian.org/debian"
    packages: list[str] = Field(default_factory=list)


class RecipeUser(_Strict):
    name: str = "tapers"
    uid: int = 1000


class RecipeModel(_Strict):
    name: str
    description: str = ""
    debootstrap: Debootstrap
    user: RecipeUser = RecipeUser()


@dataclass(frozen=True)
class Recipe:
    path: Path
    text: str
    model: RecipeModel

    @property
    def name(self) -> str:
        return self.model.name

    def customised(self, name: str, packages: list[str]) -> Recipe:
        """The same recipe, for a box called `name`, with more Debian packages in it."""
        debootstrap = self.model.debootstrap.model_copy(
            update={"packages": list(dict.fromkeys(self.model.debootstrap.packages + packages))}
        )
        model = self.model.model_copy(update={"name": name, "debootstrap": debootstrap})
        text = f"{self.text}\n# customised: name {name}, packages {' '.join(packages)}\n"
        return Recipe(path=self.path, text=text, model=model)


def available_recipes() -> list[str]:
    return sorted(load_recipe_file(p).name for p in data_dir("boxes").glob("*.yaml"))


def find_recipe(box_name: str) -> Recipe | None:
    path = data_dir("boxes") / f"{slug(box_name)}.yaml"
    return load_recipe_file(path) if path.is_file() else None


def load_recipe(box_name: str) -> Recipe:
    recipe = find_recipe(box_name)
    if recipe is None:
        known = ", ".join(available_recipes()) or "none"
        raise BoxError(
            f"no recipe for box `{box_name}`",
            hint=f"recipes shipped with tapers: {known}",
        )
    return recipe


def load_recipe_file(path: Path) -> Recipe:
    text = path.read_text()
    try:
        model = RecipeModel.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise InvalidBoxError(f"box recipe {path} is invalid: {exc}") from None
    return Recipe(path=path, text=text, model=model)
