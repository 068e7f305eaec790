"""`chimera serve` wires new-alert events to the lab's Prefect notification block."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.flows


def test_alert_automation_sends_new_alerts_to_the_configured_block(prefect_harness: str) -> None:
    """The automation reacts to chimera.alert.opened and notifies the named block; re-running updates it."""
    from prefect.automations import Automation  # noqa: PLC0415
    from prefect.blocks.notifications import SlackWebhook  # noqa: PLC0415

    from flows.common import ALERT_AUTOMATION, ensure_alert_automation  # noqa: PLC0415

    block_id = SlackWebhook(url="http://127.0.0.1:9/hook").save("lab-alerts", overwrite=True)
    first = ensure_alert_automation("slack-webhook/lab-alerts")
    second = ensure_alert_automation("slack-webhook/lab-alerts")
    assert first == second
    automation = Automation.read(name=ALERT_AUTOMATION)
    assert automation.trigger.expect == {"chimera.alert.opened"}
    assert automation.actions[0].block_document_id == block_id
    assert "event.payload.rule" in (automation.actions[0].subject or "")


def test_unknown_block_is_a_clear_error(prefect_harness: str) -> None:
    """Naming a block that does not exist fails before anything is created."""
    from flows.common import ensure_alert_automation  # noqa: PLC0415

    with pytest.raises(ValueError, match="no-such"):
        ensure_alert_automation("slack-webhook/no-such-block")
