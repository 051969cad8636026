"""gpulab.yaml's cluster backend sections, ``slurm`` and ``kubernetes`` (applied by
``settings/cluster.py``), with their defaults. Registered in ``schema.GPULAB_SCHEMA``."""

from __future__ import annotations

from .patterns import GPU_TYPE

_WORD = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_word_or_null = {"type": ["string", "null"], "pattern": _WORD}
_URL = r"^https?://[^/\s]+(/.*)?$"

SLURM = {
    "type": "object",
    "additionalProperties": False,
    "description": "backend: slurm. Servers are SLURM batch jobs; SLURM places them and picks the GPUs.",
    "properties": {
        "partition": {**_word_or_null, "description": "partition for servers (null: the cluster's default)"},
        "gpu_partition": {**_word_or_null, "description": "partition for servers with GPUs (null: partition)"},
        "account": {**_word_or_null, "description": "SLURM account to charge (null: the user's default)"},
        "qos": _word_or_null,
        "time_limit": {"type": "string", "description": "--time of every server, e.g. 08:00:00 or 1-00:00:00",
                       "pattern": r"^(\d+|\d+:\d{2}|\d+:\d{2}:\d{2}|\d+-\d+|\d+-\d+:\d{2}|\d+-\d+:\d{2}:\d{2})$"},
        "gres_types": {"type": "object", "description": "SLURM gres type -> gpulab GPU type name, e.g. {a100: A100-80GB}",
                       "propertyNames": {"pattern": _WORD}, "additionalProperties": {"type": "string", "pattern": GPU_TYPE}},
        "untyped_gpu_type": {"type": "string", "pattern": GPU_TYPE,
                             "description": "gpulab type name of GPUs declared without a type (gres gpu:4)"},
        "extra_options": {"type": "array", "items": {"type": "string", "pattern": r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_.,:=/@%+-]+)?$"},
                          "description": "further #SBATCH options, e.g. ['--constraint=ib']"},
        "prologue": {"type": "string", "description": "shell lines the job runs before the server (module load ...)"},
        "system_user_prefix": {"type": "string", "pattern": r"^([a-z_][a-z0-9_-]{0,15})?$",
                               "description": "hub user -> cluster account: prefix + sanitised name ('' = same name)"},
        "create_users": {"type": "boolean", "description": "create missing accounts on the hub's machine (single-node clusters)"},
        "home_root": {"type": "string", "minLength": 1},
        "listen_ip": {"type": "string", "pattern": r"^[0-9.]+$", "description": "where servers listen on their node"},
        "hub_connect_url": {"type": ["string", "null"], "pattern": _URL,
                            "description": "the hub API as compute nodes reach it, e.g. http://hub.cluster:8081"},
        "start_timeout": {"type": "integer", "minimum": 30, "description": "seconds a server may wait in the queue and start"},
        "refresh_seconds": {"type": "integer", "minimum": 2, "description": "capacity re-read interval"},
    },
}

_TOLERATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"}, "operator": {"enum": ["Exists", "Equal"]}, "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
    },
}
_LABEL_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

KUBERNETES = {
    "type": "object",
    "additionalProperties": False,
    "description": "backend: kubernetes. Servers are pods; the NVIDIA device plugin picks the GPUs.",
    "properties": {
        "namespace": {"type": ["string", "null"], "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      "description": "namespace of user pods (null: the hub's own)"},
        "gpu_types": {
            "type": "array",
            "description": "the cluster's GPU types: gpulab name and the GPU Operator's nvidia.com/gpu.product label",
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "product"],
                "properties": {"name": {"type": "string", "pattern": GPU_TYPE},
                               "product": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"}},
            },
        },
        "node_selector": {**_LABEL_MAP, "description": "labels every user pod's node must have"},
        "gpu_node_selector": {**_LABEL_MAP, "description": "further labels for pods with GPUs"},
        "gpu_tolerations": {"type": "array", "items": _TOLERATION, "description": "tolerations of pods with GPUs"},
        "storage": {
            "type": "object", "additionalProperties": False,
            "properties": {"capacity": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti)?$"},
                           "storage_class": {"type": ["string", "null"]},
                           "home": {"type": "string", "pattern": r"^/"}},
        },
        "start_timeout": {"type": "integer", "minimum": 30, "description": "seconds a pod may wait to be scheduled and start"},
        "refresh_seconds": {"type": "integer", "minimum": 2, "description": "capacity re-read interval"},
        "hub_image": {"type": "string", "description": "hub image (name:tag) for the Helm values"},
        "postgres_url": {"type": ["string", "null"], "pattern": r"^postgresql(\+\w+)?://",
                         "description": "hub database for the Helm values (password from the gpulab-postgres secret)"},
    },
}

CLUSTER_DEFAULTS = dict(
    slurm={
        "partition": None, "gpu_partition": None, "account": None, "qos": None, "time_limit": "08:00:00",
        "gres_types": {}, "untyped_gpu_type": "GPU", "extra_options": [], "prologue": "",
        "system_user_prefix": "", "create_users": False, "home_root": "/home", "listen_ip": "0.0.0.0",
        "hub_connect_url": None, "start_timeout": 3600, "refresh_seconds": 10,
    },
    kubernetes={
        "namespace": None, "gpu_types": [], "node_selector": {}, "gpu_node_selector": {},
        "gpu_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "storage": {"capacity": "10Gi", "storage_class": None, "home": "/home/jovyan"},
        "start_timeout": 3600, "refresh_seconds": 15, "hub_image": "ghcr.io/gpulab/hub:0.1.0",
        "postgres_url": "postgresql+psycopg://gpulab@gpulab-postgresql:5432/gpulab",
    },
)
