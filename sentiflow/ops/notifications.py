"""The notification block built from ``SENTIFLOW_NOTIFY_URL`` and the failure message template.

URL kinds:

- ``https://hooks.slack.com/services/...`` → :class:`~prefect.blocks.notifications.SlackWebhook`;
- any other Apprise URL (``mailto://``, ``json://``, ``slack://``, ``msteams://``, …) → an Apprise block
  (``SlackWebhook`` is Prefect's general Apprise block: a non-Slack URL is handed to Apprise as is);
- any other ``http(s)://`` URL → :class:`~prefect.blocks.notifications.CustomWebhookNotificationBlock` that
  POSTs JSON ``{"subject", "text", "source"}``.

The block is saved under one name per type; saving is idempotent (``overwrite=True``).

The URL is a secret (for Slack the path is the credential, for webhooks a token in its query): it is kept in a
block secret field only — ``SlackWebhook.url`` is a ``SecretStr``; the webhook block's ``url`` is the placeholder
``{{webhook_url}}`` filled from its ``secrets`` — and no error message here echoes it. The failure message
names the run's parameters, never their values (a data URL may carry credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import SecretStr

from core.errors import ConfigError
from core.events import FAILED_ERROR_LABEL, FAILED_TASK_LABEL
from sentiflow.ops import NOTIFY_BLOCK

if TYPE_CHECKING:
    from prefect.blocks.abstract import NotificationBlock

SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")

FAILURE_SUBJECT = "sentiflow: flow run {{ flow_run.name }} {{ flow_run.state.name }} ({{ flow.name }})"
"""Subject of the failure notification (Jinja rendered by the Prefect server)."""

FAILURE_BODY = (
    "Flow: {{ flow.name }}\n"
    "Deployment: {{ deployment.name if deployment else '(none: run outside a deployment)' }}\n"
    "Run: {{ flow_run.name }} ({{ flow_run.id }})\n"
    "State: {{ flow_run.state.name }}\n"
    "Failed task: {{ flow_run.labels.get('" + FAILED_TASK_LABEL + "', 'unknown (the run ended outside a task)') }}\n"
    "Error: {{ flow_run.labels.get('" + FAILED_ERROR_LABEL + "', flow_run.state.message) }}\n"
    "State message: {{ flow_run.state.message }}\n"
    "Parameters: {{ flow_run.parameters.keys()|sort|join(', ') }} (values in the UI)\n"
    "URL: {{ flow_run|ui_url }}"
)
"""Body of the failure notification: flow, deployment, run, failed task, error, parameter names and a link."""

WEBHOOK_URL_SECRET = "webhook_url"
"""Key of the webhook block's ``secrets`` that holds the real URL (its ``url`` field is only the placeholder)."""


def _plain(url: str | SecretStr) -> str:
    return (url.get_secret_value() if isinstance(url, SecretStr) else url).strip()


def classify_notify_url(url: str | SecretStr) -> str:
    """``"slack"``, ``"apprise"`` or ``"webhook"`` for a notification URL; ConfigError if it is unusable.

    The messages never contain the URL (it is a secret), only its scheme."""
    url = _plain(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(
            "SENTIFLOW_NOTIFY_URL has no scheme; use a Slack webhook URL, an Apprise URL "
            "(mailto://, json://, ...) or an http(s):// webhook URL"
        )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError("SENTIFLOW_NOTIFY_URL has no host name; give a full http(s):// URL")
        if scheme == "https" and parts.hostname in SLACK_HOSTS:
            return "slack"
        return "webhook"
    import apprise

    if not apprise.Apprise().add(url):
        raise ConfigError(
            f"SENTIFLOW_NOTIFY_URL scheme {scheme!r}:// is not an Apprise URL Prefect can send to; see "
            "https://github.com/caronc/apprise/wiki for the URL formats, or use an http(s):// webhook"
        )
    return "apprise"


def notification_block_for(url: str | SecretStr) -> NotificationBlock:
    """An unsaved notification block for ``url`` (see the module docstring for the mapping); the URL is held in
    a secret field only."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock, SlackWebhook

    url = _plain(url)
    kind = classify_notify_url(url)
    if kind in ("slack", "apprise"):
        return SlackWebhook(url=url)
    return CustomWebhookNotificationBlock(
        name="sentiflow",
        url="{{" + WEBHOOK_URL_SECRET + "}}",
        secrets={WEBHOOK_URL_SECRET: url},
        method="POST",
        json_data={"subject": "{{subject}}", "text": "{{body}}", "source": "sentiflow"},
        timeout=10,
    )


def save_notification_block(url: str | SecretStr, name: str = NOTIFY_BLOCK) -> UUID:
    """Create or update the notification block for ``url``; returns its block-document id.

    Must run with the Prefect API of the target server configured (see ``sentiflow.ops.deploy.use_api``).
    """
    block = notification_block_for(url)
    return block.save(name, overwrite=True)
