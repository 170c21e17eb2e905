"""jinja2 rendering of the templates in provisioners/ (sandboxed, strict)."""

from __future__ import annotations

from typing import Any

from tapers.resources import data_dir


def render_template(name: str, **variables: Any) -> str:
    """Render provisioners/<name>; a variable the template uses but nobody gave is an error."""
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(data_dir("provisioners"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(name).render(**variables)
