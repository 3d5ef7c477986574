"""The base of every settings model (frozen, no unknown keys, no input in errors) and the
reference to a secret; `_settings` builds the configuration from them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr, model_validator


def _known_zone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {v!r} (an IANA name such as Asia/Shanghai)") from None
    return v


# An IANA time zone name (Asia/Shanghai), checked at load.
TimeZoneName = Annotated[str, AfterValidator(_known_zone)]


class Frozen(BaseModel):
    # A validation error's text quotes the input it refused, which for a sink URL may be
    # its token; the reasons (`_format_validation`) never needed the input.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class SecretRef(Frozen):
    """Where a secret lives: `file: /path` or `credential: name`."""

    file: Path | None = None
    credential: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.file is None) == (self.credential is None):
            raise ValueError("give exactly one of 'file' or 'credential'")
        return self

    def read(self, base: Path) -> SecretStr:
        """Read the secret; a trailing newline (as `echo` writes) is not part of it."""
        if self.credential is not None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            if not creds:
                raise ValueError(
                    f"credential {self.credential!r} needs $CREDENTIALS_DIRECTORY "
                    "(set by systemd's LoadCredential=)"
                )
            path = Path(creds) / self.credential
        else:
            assert self.file is not None
            path = self.file if self.file.is_absolute() else base / self.file
        try:
            return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
