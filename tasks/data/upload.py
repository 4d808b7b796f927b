"""Stage 7 — put the channel files into the artifact store, skipping files already there with the same hash."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from backends.base import ArtifactStore
from tasks.data.channels import CHANNEL_FILES


@dataclass(frozen=True)
class UploadedChannels:
    """Store URIs of each channel folder, and what was actually transferred."""

    channels: dict[str, str]
    uploaded: list[str]
    skipped: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def upload_channels(channels_root: Path, key: str, store: ArtifactStore) -> UploadedChannels:
    """Upload ``channels_root/<channel>/<file>`` to ``channels/<key>/<channel>/<file>`` in ``store``."""
    uploaded, skipped, channels = [], [], {}
    for channel, files in CHANNEL_FILES.items():
        prefix = f"channels/{key}/{channel}"
        for name in files:
            _, sent = store.put_file(Path(channels_root) / channel / name, f"{prefix}/{name}")
            (uploaded if sent else skipped).append(f"{channel}/{name}")
        channels[channel] = store.uri(prefix)
    return UploadedChannels(channels, uploaded, skipped)
