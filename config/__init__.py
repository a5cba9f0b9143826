"""Stack configuration: one pydantic model, one loader."""

from .loader import ConfigError, load_stack_config, validate_config
from .model import StackConfig

__all__ = ["ConfigError", "StackConfig", "load_stack_config", "validate_config"]
