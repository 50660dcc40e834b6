"""The `ingest_data` component: `core.py` (plain Python) and `component.py` (KFP shell)."""
