"""Model specs: YAML -> validated, default-filled :class:`Spec`.

Public API::

    from asymspec.spec import load_spec, load_spec_text, Spec

    spec = load_spec("specs/mlp.yaml", overrides=["model.widths=[256,256]"])
    spec.data["model"]["activation"]          # defaults are always filled in
    raise spec.error(("model", "layers", 3, "in"), "unknown layer 'fc9'")   # located SpecError
"""

from asymspec.errors import SpecError
from asymspec.spec.loader import load_spec, load_spec_text
from asymspec.spec.overrides import Override, parse_override
from asymspec.spec.resolved import Spec
from asymspec.spec.schema import load_schema, schema_path

__all__ = [
    "Override",
    "Spec",
    "SpecError",
    "load_schema",
    "load_spec",
    "load_spec_text",
    "parse_override",
    "schema_path",
]
