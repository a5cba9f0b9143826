"""AI Meeting: load and validate the stack config, build the stack, export its outputs."""

import pulumi

from config import ConfigError, load_stack_config

try:
    cfg = load_stack_config()
except ConfigError as err:
    # RunError prints the message alone: no traceback, and nothing has been declared yet.
    raise pulumi.RunError(str(err)) from None

# ssh/swarm targets: one quick ssh login per server before anything is declared, so a wrong key,
# a changed host key or an unreachable host fails in seconds with a message that says what to do.
from components.ssh_preflight import ssh_preflight_problems  # noqa: E402

problems = ssh_preflight_problems(cfg, pulumi.get_stack(), warn=pulumi.log.warn)
if problems:
    raise pulumi.RunError("\n".join(problems))

# images.postgres to another major version: refused here, before anything is declared, unless
# the operator asked for the upgrade (README: PostgreSQL major upgrade).
from components.postgres_major import major_change_problem  # noqa: E402
from components.previous_outputs import previous_outputs  # noqa: E402

problem = major_change_problem(previous_outputs(pulumi.get_stack()).get("postgres"), cfg.images.postgres, cfg.database.upgrade)
if problem:
    raise pulumi.RunError(str(ConfigError(pulumi.get_stack(), [f"ai-meeting:{problem}"])))

# Imported after validation: the providers' SDKs take seconds to import, bad config fails first.
from components.stack import AiMeetingStack  # noqa: E402

if cfg.target.kind == "swarm":
    from components.swarm_stack import SwarmStack

    stack = SwarmStack("ai-meeting", cfg)
else:
    stack = AiMeetingStack("ai-meeting", cfg)
for key, value in stack.outputs.items():
    pulumi.export(key, value)
