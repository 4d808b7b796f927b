"""Stage 7 — put the channel files into the artifact store, skipping files already there with the same hash.

:func:`upload_channels` does the work; ``upload_task`` is the Prefect stage around it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from prefect import task
from prefect.logging import get_run_logger

from backends.base import ArtifactStore, get_store
from core.config import Settings
from tasks.data.prepare import CHANNEL_FILES, ChannelSet
from tasks.policies import NETWORK_RETRIES, STAGE_OPTIONS


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


# --- the Prefect task ----------------------------------------------------------------------------------


@task(name="upload-channels", **STAGE_OPTIONS, **NETWORK_RETRIES)
def upload_task(settings: Settings, channels: ChannelSet) -> UploadedChannels:
    """Put the channel files into the backend's artifact store (unchanged files are skipped)."""
    result = upload_channels(Path(channels.root), channels.key, get_store(settings))
    get_run_logger().info(
        "upload: %d files sent, %d already there → %s",
        len(result.uploaded),
        len(result.skipped),
        result.channels,
    )
    return result
