"""Detection: baselines, per-window evaluation, classification and the incident lifecycle (pure logic)."""
