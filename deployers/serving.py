"""Settings shared by the deployers that run a model's scoring server (local, SageMaker)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import Field, field_validator

from deployers.base import Settings

# An environment variable's name; names that look like credentials are refused, since settings
# are logged (a secret belongs in the server's own environment, never in a setting).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE", re.IGNORECASE)


class ServingSettings(Settings):
    """Settings of a deployment that runs a model's scoring server (local, SageMaker)."""

    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Environment variables of the served model's scoring server (on SageMaker, "
        "the container's Environment), e.g. {\"NISER_BATCHING\": \"0\"} to turn the NISER "
        "model's request batching off. Names like credentials (SECRET, TOKEN, PASSWORD, "
        "ACCESS_KEY, ...) are refused: settings are logged.")

    @field_validator("environment", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        """A JSON object given as text (``mlflow deployments create -C 'environment={...}'``)."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError(f"environment {value[:60]!r} is not a JSON object such as "
                                 '{"NISER_BATCHING": "0"}') from None
        return value

    @field_validator("environment")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"environment key {key[:40]!r} is not a variable name "
                                 "(letters, digits and _, not starting with a digit)")
            if SECRET_NAME.search(key):
                raise ValueError(f"environment key {key!r} looks like a credential; settings "
                                 "are logged, so pass secrets through the server's own "
                                 "environment or an IAM role instead")
            if len(value) > 4096:
                raise ValueError(f"environment value of {key} is over 4096 characters")
        return env
