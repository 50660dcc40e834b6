"""The `export_savedmodel` component: `core.py` (plain Python) and `component.py` (KFP shell)."""
