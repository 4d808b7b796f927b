"""Stage 7: the channel files go into the artifact store; unchanged files are skipped."""

from __future__ import annotations

from backends.local.storage import LocalArtifactStore
from tasks.data.upload import upload_channels


def test_upload_channels_skips_unchanged_files(settings, synthetic_archive) -> None:
    from tasks.data.load import load_archive
    from tasks.data.prepare import prepare_channels

    channels = prepare_channels(load_archive(synthetic_archive), "sha", settings)
    store = LocalArtifactStore(settings.store_dir)
    first = upload_channels(channels.channel_dir("train").parent, channels.key, store)
    assert len(first.uploaded) == 7 and first.skipped == []
    assert set(first.channels) == {"train", "validation", "test"}
    second = upload_channels(channels.channel_dir("train").parent, channels.key, store)
    assert second.uploaded == [] and len(second.skipped) == 7
