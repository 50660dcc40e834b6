"""The `publish_model` component: `core.py` (plain Python) and `component.py` (KFP shell)."""
