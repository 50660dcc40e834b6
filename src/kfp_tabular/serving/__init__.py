"""The serving side of kfp-tabular: what runs next to TF Serving, not inside a pipeline step.

``kfp-tabular fetch-model`` (the TF Serving pod's init container) lives here: :mod:`.fetch` copies one model
version from S3/MinIO or a folder into TF Serving's ``<base_path>/<version>/`` layout, and :mod:`.verify` checks
that a folder holds a complete SavedModel before it is published there.
"""
