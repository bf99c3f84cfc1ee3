"""The Prefect UI builds the "Custom run" form from the flow's parameter schema: every parameter must render as an
editable field with its default (an optional type renders as "None" behind a type toggle), and the help text must
not hold angle brackets (the UI drops them as HTML: "<root>/workspaces/" showed as "/workspaces/")."""

from __future__ import annotations

import re

from prefect.utilities.callables import parameter_schema

from flows.pipeline import ssl_pipeline


def test_every_flow_parameter_is_one_plain_type_with_a_default() -> None:
    schema = parameter_schema(ssl_pipeline.fn).model_dump_for_openapi()
    props = schema["properties"]
    assert set(props) == {"params_file", "dataset", "objectives", "epochs", "num_workers", "overrides",
                          "workspace", "project_root"}
    for name, prop in props.items():
        assert "anyOf" not in prop and prop.get("type") in {"string", "integer", "array", "object"}, (name, prop)
        assert "default" in prop, name
        assert prop.get("description"), name
        assert not re.search(r"<[^>]*>", prop["description"]), (name, prop["description"])
    assert not schema.get("required")


def test_the_readme_names_every_field_of_the_form() -> None:
    """README's "The two UIs" lists the Custom run form's parameters: all of them, not the first six."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    bullet = readme[readme.index("- **Prefect**:"):readme.index("- **MLflow**:")]
    props = parameter_schema(ssl_pipeline.fn).model_dump_for_openapi()["properties"]
    assert [p for p in props if f"`{p}`" not in bullet] == []
