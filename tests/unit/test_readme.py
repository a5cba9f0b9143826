"""The README's configuration reference stays true: every key of the model is documented."""

from pathlib import Path

from pydantic import BaseModel

from config.model import LocalTarget, SshTarget, StackConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        name = field.alias or name  # the key the operator writes (email.from, not from_)
        ann = field.annotation
        if prefix == "" and name == "target":
            continue  # a union of LocalTarget | SshTarget: documented key by key below
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if prefix == "" and name in ("resources", "hardening"):
                # One row per setting for every service: `<name>.<service>.<setting>`.
                settings = {k for sub in ann.model_fields.values() for k in sub.annotation.model_fields}
                out += [f"{name}.<service>.{k}" for k in sorted(settings)]
            else:
                out += keys(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_config_key_is_in_the_readme():
    all_keys = keys(StackConfig) + keys(LocalTarget, "target.") + keys(SshTarget, "target.")
    missing = sorted({k for k in all_keys if f"`{k}`" not in README})
    assert not missing, f"README configuration table lacks {missing}"
