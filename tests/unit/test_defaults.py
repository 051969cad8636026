"""One place for defaults, checked as zero-to-jupyterhub checks its values against its schema:
every key of gpulab.yaml's schema has its default in ``DEFAULTS`` and every default is a key of
the schema. The few sections without defaults say why."""

from __future__ import annotations

import pytest

from hub_plugins.settings.defaults import section
from hub_plugins.settings.schema import CULL_POLICY_DEFAULTS, DEFAULTS, GPULAB_SCHEMA
from hub_plugins.settings.validate import validate

# sections the schema knows that deliberately have no default
NO_DEFAULT = {
    "auth.oidc", "auth.github", "auth.google", "auth.ldap",  # a provider's settings: required once chosen
    "quotas.default",  # a limit left out is no limit (the shipped default sets two)
}


def differences(schema: dict, defaults, path: str = "") -> list[str]:
    out = []
    props = schema.get("properties")
    if props is None or path in NO_DEFAULT:
        return out
    if not isinstance(defaults, dict):
        return [f"{path}: a section without a mapping of defaults"]
    for key in sorted(set(props) - set(defaults)):
        where = f"{path}.{key}" if path else key
        if where not in NO_DEFAULT:
            out.append(f"{where}: in the schema, no default")
    for key in sorted(set(defaults) - set(props)):
        out.append(f"{path}.{key}: a default the schema does not know")
    for key in sorted(set(props) & set(defaults)):
        out += differences(props[key], defaults[key], f"{path}.{key}" if path else key)
    return out


def test_schema_and_defaults_have_the_same_keys():
    assert differences(GPULAB_SCHEMA, DEFAULTS) == []


def test_a_cull_policy_defaults_every_key_of_a_policy():
    item = GPULAB_SCHEMA["properties"]["culler"]["properties"]["policies"]["items"]
    assert set(CULL_POLICY_DEFAULTS) == set(item["properties"])


def test_the_defaults_are_valid():
    validate(DEFAULTS, GPULAB_SCHEMA, "DEFAULTS")
    validate({"culler": {"policies": [CULL_POLICY_DEFAULTS]}}, GPULAB_SCHEMA, "CULL_POLICY_DEFAULTS")


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_a_section_given_in_part_is_completed_from_the_defaults(name):
    if not isinstance(DEFAULTS[name], dict):
        pytest.skip("not a section")
    assert section(name, {}) == DEFAULTS[name]
