"""The one error type for bad configuration: its message names the key and what to change."""


class ConfigError(ValueError):
    pass
