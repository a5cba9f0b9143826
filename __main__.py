"""AI Meeting: load and validate the stack config, build the stack, export its outputs."""

import pulumi

from config import ConfigError, load_stack_config

try:
    cfg = load_stack_config()
except ConfigError as err:
    # RunError prints the message alone: no traceback, and nothing has been declared yet.
    raise pulumi.RunError(str(err)) from None

# Imported after validation: the providers' SDKs take seconds to import, bad config fails first.
from components.stack import AiMeetingStack  # noqa: E402

if cfg.target.kind == "swarm":
    from components.swarm_stack import SwarmStack

    stack = SwarmStack("ai-meeting", cfg)
else:
    stack = AiMeetingStack("ai-meeting", cfg)
for key, value in stack.outputs.items():
    pulumi.export(key, value)
