"""Render ML Commons and neural-search JSON bodies from Jinja templates, gated by the target OpenSearch version.

``render(name, manifest, target_version, **values) -> dict``. Templates ship as package data; a directory given as
``template_dir`` overrides any template by file name. The catalog lives in catalog.py, the refusals in checks.py,
the rendering in rendering.py.
"""

from .catalog import TEMPLATES, TemplateSpec
from .checks import check_access_mode
from .rendering import (
    CHUNK_SIZE,
    list_templates,
    parse_set_values,
    render,
    template_variables,
    write_package_bodies,
)

__all__ = [
    "CHUNK_SIZE",
    "TEMPLATES",
    "TemplateSpec",
    "check_access_mode",
    "list_templates",
    "parse_set_values",
    "render",
    "template_variables",
    "write_package_bodies",
]
