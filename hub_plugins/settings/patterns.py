"""Value patterns shared by gpulab's schemas (gpulab.yaml, profiles, the cluster sections)."""

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]*$"  # hub user / group names we accept in config
PROFILE_NAME = r"^[a-z0-9][a-z0-9-]{0,62}$"
SIZE = r"^[0-9]+(\.[0-9]+)?[KMGT]?i?B?$"
GPU_TYPE = r"^[A-Za-z0-9][A-Za-z0-9._-]*(:([0-9]+g\.[0-9]+gb(\+me)?|shared))?$"

AMOUNT = {"type": ["number", "null"], "minimum": 0}
names_or_all = {
    "description": "'*' (all) or a list of names",
    "oneOf": [
        {"const": "*"},
        {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 128}, "uniqueItems": True,
         "maxItems": 256},
        {"type": "null"},
    ]
}
